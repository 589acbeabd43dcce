// The peers' recipes under distlock's W1, W2 and W3 workloads, against the same servers, so
// that distlock's figures can be read against theirs measured on the same machine in the same
// hour. The recipes are the libraries' own (go-zookeeper's zk.Lock, etcd's concurrency.Mutex,
// and with -recipe election etcd's concurrency.Election, Campaign for acquire and Resign for
// release); this file only drives them and measures, the way distlock-bench does. One JSON
// line per run.
//
// Build (Debian's Go and the libraries' Debian packages, GOPATH mode; see bench/peers/README.md):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o /tmp/peers bench/peers/main.go
//
// Run:
//
//	/tmp/peers -etcd 127.0.0.1:2379 -zk 127.0.0.1:2181 -workload w2 -clients 8 -seconds 5
//	/tmp/peers -etcd 127.0.0.1:2379 -recipe election -workload w2 -clients 8 -seconds 5
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/samuel/go-zookeeper/zk"
	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
)

// locker is one client's lock: its own session, one lock name.
type locker interface {
	lock() error
	unlock() error
	close()
}

type zkLocker struct {
	conn *zk.Conn
	l    *zk.Lock
}

func (z *zkLocker) lock() error   { return z.l.Lock() }
func (z *zkLocker) unlock() error { return z.l.Unlock() }
func (z *zkLocker) close()        { z.conn.Close() }

type quiet struct{}

func (quiet) Printf(string, ...interface{}) {}

func newZk(server, path string) (locker, error) {
	conn, _, err := zk.Connect([]string{server}, 10*time.Second, zk.WithLogger(quiet{}), zk.WithLogInfo(false))
	if err != nil {
		return nil, err
	}
	return &zkLocker{conn: conn, l: zk.NewLock(conn, path, zk.WorldACL(zk.PermAll))}, nil
}

type etcdLocker struct {
	client  *clientv3.Client
	session *concurrency.Session
	m       *concurrency.Mutex
}

func (e *etcdLocker) lock() error   { return e.m.Lock(context.Background()) }
func (e *etcdLocker) unlock() error { return e.m.Unlock(context.Background()) }
func (e *etcdLocker) close() {
	e.session.Close()
	e.client.Close()
}

// etcdCandidate is one client's candidacy in an election: Campaign to lead, Resign to step down.
type etcdCandidate struct {
	client   *clientv3.Client
	session  *concurrency.Session
	election *concurrency.Election
}

func (e *etcdCandidate) lock() error   { return e.election.Campaign(context.Background(), "bench") }
func (e *etcdCandidate) unlock() error { return e.election.Resign(context.Background()) }
func (e *etcdCandidate) close() {
	e.session.Close()
	e.client.Close()
}

// newEtcdSession connects one client with its own session (a 10 s lease).
func newEtcdSession(endpoint string) (*clientv3.Client, *concurrency.Session, error) {
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, nil, err
	}
	session, err := concurrency.NewSession(client, concurrency.WithTTL(10))
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return client, session, nil
}

func newEtcdElection(endpoint, prefix string) (locker, error) {
	client, session, err := newEtcdSession(endpoint)
	if err != nil {
		return nil, err
	}
	return &etcdCandidate{client: client, session: session, election: concurrency.NewElection(session, prefix)}, nil
}

func newEtcd(endpoint, prefix string) (locker, error) {
	client, session, err := newEtcdSession(endpoint)
	if err != nil {
		return nil, err
	}
	return &etcdLocker{client: client, session: session, m: concurrency.NewMutex(session, prefix)}, nil
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return float64(sorted[i].Microseconds()) / 1000
}

func main() {
	etcdAddr := flag.String("etcd", "", "etcd endpoint host:port")
	zkAddr := flag.String("zk", "", "ZooKeeper server host:port")
	workload := flag.String("workload", "w2", "w1 (uncontended), w2 (contended) or w3 (independent)")
	recipe := flag.String("recipe", "lock", "lock, or election (etcd only)")
	clients := flag.Int("clients", 8, "w2: clients, each its own session")
	seconds := flag.Float64("seconds", 5, "w2: how long")
	cycles := flag.Int("cycles", 1000, "w1: acquire+release cycles")
	flag.Parse()

	type backend struct {
		name      string
		newLocker func(name string) (locker, error)
	}
	var backends []backend
	run := time.Now().UnixNano()
	if *etcdAddr != "" && *recipe == "election" {
		backends = append(backends, backend{"etcd concurrency.Election", func(name string) (locker, error) {
			return newEtcdElection(*etcdAddr, fmt.Sprintf("/peers/%d/%s", run, name))
		}})
	}
	if *etcdAddr != "" && *recipe == "lock" {
		backends = append(backends, backend{"etcd concurrency.Mutex", func(name string) (locker, error) {
			return newEtcd(*etcdAddr, fmt.Sprintf("/peers/%d/%s", run, name))
		}})
	}
	if *zkAddr != "" && *recipe == "lock" {
		backends = append(backends, backend{"go-zookeeper zk.Lock", func(name string) (locker, error) {
			return newZk(*zkAddr, fmt.Sprintf("/peers-%d-%s", run, name))
		}})
	}
	out := json.NewEncoder(os.Stdout)
	for _, b := range backends {
		var result map[string]interface{}
		var err error
		switch *workload {
		case "w1":
			result, err = uncontended(b.newLocker, *cycles)
		case "w2":
			result, err = contended(b.newLocker, *clients, time.Duration(*seconds*float64(time.Second)), false)
		case "w3":
			result, err = contended(b.newLocker, *clients, time.Duration(*seconds*float64(time.Second)), true)
		default:
			err = fmt.Errorf("unknown workload %q: w1, w2 or w3", *workload)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", b.name, err)
			os.Exit(1)
		}
		result["implementation"] = b.name
		result["workload"] = *workload
		_ = out.Encode(result)
	}
}

func uncontended(newLocker func(string) (locker, error), cycles int) (map[string]interface{}, error) {
	l, err := newLocker("w1")
	if err != nil {
		return nil, err
	}
	defer l.close()
	// One warm-up cycle creates the lock's parent.
	if err := l.lock(); err != nil {
		return nil, err
	}
	if err := l.unlock(); err != nil {
		return nil, err
	}
	acquire := make([]time.Duration, 0, cycles)
	start := time.Now()
	for i := 0; i < cycles; i++ {
		t := time.Now()
		if err := l.lock(); err != nil {
			return nil, err
		}
		acquire = append(acquire, time.Since(t))
		if err := l.unlock(); err != nil {
			return nil, err
		}
	}
	elapsed := time.Since(start)
	sort.Slice(acquire, func(i, j int) bool { return acquire[i] < acquire[j] })
	return map[string]interface{}{
		"cycles":         cycles,
		"cycles_per_s":   float64(cycles) / elapsed.Seconds(),
		"acquire_p50_ms": percentile(acquire, 0.5),
		"acquire_p99_ms": percentile(acquire, 0.99),
	}, nil
}

// contended is W2 (every client on one lock) or, with independent, W3 (each client its own).
func contended(newLocker func(string) (locker, error), clients int, d time.Duration, independent bool) (map[string]interface{}, error) {
	lockers := []locker{}
	for i := 0; i < clients; i++ {
		name := "w2"
		if independent {
			name = fmt.Sprintf("w3-%d", i)
		}
		l, err := newLocker(name)
		if err != nil {
			return nil, err
		}
		defer l.close()
		lockers = append(lockers, l)
	}
	var mu sync.Mutex
	var waits []time.Duration
	counts := make([]int, clients)
	errs := make(chan error, clients)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i, l := range lockers {
		wg.Add(1)
		go func(i int, l locker) {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t := time.Now()
				if err := l.lock(); err != nil {
					errs <- err
					return
				}
				w := time.Since(t)
				if err := l.unlock(); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				waits = append(waits, w)
				counts[i]++
				mu.Unlock()
			}
		}(i, l)
	}
	wg.Wait()
	elapsed := time.Since(start)
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	sort.Slice(waits, func(i, j int) bool { return waits[i] < waits[j] })
	min, max := counts[0], counts[0]
	for _, c := range counts {
		if c < min {
			min = c
		}
		if c > max {
			max = c
		}
	}
	fairness := 0.0
	if min > 0 {
		fairness = float64(max) / float64(min)
	}
	if independent {
		return map[string]interface{}{
			"clients":        clients,
			"acquisitions":   len(waits),
			"ops_per_s":      float64(len(waits)) / elapsed.Seconds(),
			"acquire_p50_ms": percentile(waits, 0.5),
			"acquire_p99_ms": percentile(waits, 0.99),
		}, nil
	}
	return map[string]interface{}{
		"clients":              clients,
		"handoffs":             len(waits),
		"handoffs_per_s":       float64(len(waits)) / elapsed.Seconds(),
		"wait_p50_ms":          percentile(waits, 0.5),
		"wait_p99_ms":          percentile(waits, 0.99),
		"max_min_acquisitions": fairness,
	}, nil
}
