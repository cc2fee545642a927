// A JavaScript target for JIT-frame tests: one function that never returns, so that once V8
// has compiled it (on-stack replacement), its machine code is on the main thread's stack at
// every moment. Prints "ready js PID" first.
function hotLoopInJavaScript() {
    let total = 0;
    for (let i = 0; ; i++) {
        total += Math.sqrt(i) * Math.sin(i);
        if (total === -1) return total;  // never: keeps the loop's result alive
    }
}
console.log("ready js " + process.pid);
hotLoopInJavaScript();
