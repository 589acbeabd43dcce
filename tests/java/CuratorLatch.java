// A Curator LeaderLatch participant, for distlock's interop tests: campaigns on a latch path
// beside distlock and reports what Curator sees. Built by the tests with javac against Debian's
// libcurator-recipes-java.
//
// Usage: java CuratorLatch <connect string> <latch path> <participant id>
// Prints, one line each, flushed: "leader <id>" whenever the leader Curator reads changes
// (an empty id while nobody leads), "elected" once this participant leads. The first line read
// on standard input (or its end) closes the latch, which gives leadership up: then "closed".
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.recipes.leader.LeaderLatch;

public class CuratorLatch {
    public static void main(String[] args) throws Exception {
        CuratorFramework client = CuratorPeer.connect(args[0]);
        LeaderLatch latch = new LeaderLatch(client, args[1], args[2]);
        latch.start();

        AtomicBoolean done = new AtomicBoolean(false);
        Thread watcher = new Thread(() -> {
            String last = null;
            while (!done.get()) {
                try {
                    String now = latch.getLeader().getId();
                    if (!now.equals(last)) {
                        CuratorPeer.say("leader " + now);
                        last = now;
                    }
                    Thread.sleep(20);
                } catch (Exception e) {
                    // The latch is closing, or the connection is down for a moment: look again.
                }
            }
        });
        watcher.setDaemon(true);
        watcher.start();

        Thread elected = new Thread(() -> {
            try {
                latch.await();
                CuratorPeer.say("elected");
            } catch (Exception e) {
                // Closed before it was elected.
            }
        });
        elected.setDaemon(true);
        elected.start();

        new BufferedReader(new InputStreamReader(System.in)).readLine();
        done.set(true);
        latch.close();
        CuratorPeer.say("closed");
        client.close();
    }
}
