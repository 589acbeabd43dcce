// What the Curator peers of distlock's interop tests share: a started, connected client with
// the tests' timeouts, and one flushed line of output at a time.
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.ExponentialBackoffRetry;

final class CuratorPeer {
    private CuratorPeer() {}

    /** Prints `line` and flushes it, one line at a time across threads. */
    static synchronized void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    /** A Curator client of `connectString`, started and connected. */
    static CuratorFramework connect(String connectString) throws InterruptedException {
        CuratorFramework client = CuratorFrameworkFactory.builder()
                .connectString(connectString)
                .sessionTimeoutMs(4000)
                .connectionTimeoutMs(4000)
                .retryPolicy(new ExponentialBackoffRetry(100, 5))
                .build();
        client.start();
        client.blockUntilConnected();
        return client;
    }
}
