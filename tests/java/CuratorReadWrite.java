// One side of a Curator InterProcessReadWriteLock, for distlock's interop tests: takes the read
// or the write lock on a path beside distlock and reports when it holds. Built by the tests
// with javac against Debian's libcurator-recipes-java.
//
// Usage: java CuratorReadWrite <connect string> <lock path> read|write
// Prints, one line each, flushed: "acquired" once it holds the lock; after the first line read
// on standard input (or its end) it releases (or stops waiting) and prints "released".
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.concurrent.CountDownLatch;

import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.framework.recipes.locks.InterProcessReadWriteLock;

public class CuratorReadWrite {
    public static void main(String[] args) throws Exception {
        CuratorFramework client = CuratorPeer.connect(args[0]);
        InterProcessReadWriteLock lock = new InterProcessReadWriteLock(client, args[1]);
        InterProcessMutex side = args[2].equals("read") ? lock.readLock() : lock.writeLock();

        // Curator's locks belong to the thread that acquired them: it also releases.
        CountDownLatch stop = new CountDownLatch(1);
        Thread holder = new Thread(() -> {
            try {
                side.acquire();
                CuratorPeer.say("acquired");
                stop.await();
                side.release();
            } catch (Exception e) {
                // Interrupted while waiting: the end of input came first.
            }
        });
        holder.start();
        new BufferedReader(new InputStreamReader(System.in)).readLine();
        if (side.isAcquiredInThisProcess()) {
            stop.countDown();
        } else {
            holder.interrupt();
        }
        holder.join();
        CuratorPeer.say("released");
        client.close();
    }
}
