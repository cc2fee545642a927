// A Go target for Go tests: an HTTP server on a loopback port with goroutines parked in known
// functions. Prints "ready go PID" once they are started; on a "stacks" line on stdin, prints
// its own runtime.Stack(all) dump, then "end stacks".
package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"
)

//go:noinline
func parkedInSleep() { time.Sleep(time.Hour) }

//go:noinline
func parkedOnChannel(c chan int) { <-c }

func main() {
	var mu sync.Mutex
	mu.Lock()
	c := make(chan int)
	for i := 0; i < 3; i++ {
		go parkedInSleep()
		go parkedOnChannel(c)
		go func() { mu.Lock() }()
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(1)
	}
	go http.Serve(listener, nil)
	fmt.Printf("ready go %d\n", os.Getpid())
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		fmt.Printf("%s\nend stacks\n", buf[:n])
	}
	select {}
}
