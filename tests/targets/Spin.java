// A Java target for JIT tests: the main thread runs hotLoopInJava forever, which the JIT
// compiles; prints "ready java PID" first.
public class Spin {
    static long hotLoopInJava(long n) {
        long total = 0;
        for (long i = 0; ; i++) {
            total += (i * 31) ^ (total >>> 3) ^ n;
            if (total == 42) {
                System.out.println(total);
            }
        }
    }

    public static void main(String[] args) {
        System.out.println("ready java " + ProcessHandle.current().pid());
        System.out.flush();
        hotLoopInJava(args.length);
    }
}
