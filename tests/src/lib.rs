//! The harness that runs real etcd and ZooKeeper servers for distlock's tests.
