// A Go target for Go tests: an HTTP server on a loopback port with goroutines parked in known
// functions: 3 in time.Sleep, 3 on a channel receive, 3 on a sync.Mutex, 3 in a select over 8
// channels, 3 at the end of a 3-deep named chain, and 1 on a channel receive with the pprof
// labels tenant=acme and request=42 (pprof.Do). Prints "ready go PID" once they are
// started; on a "stacks" line on stdin, prints its own runtime.Stack(all) dump, then
// "end stacks"; on a "gc" line, runs a garbage collection (which stamps every blocked
// goroutine's wait start), then prints "gc done".
package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"
)

//go:noinline
func parkedInSleep() { time.Sleep(time.Hour) }

//go:noinline
func parkedOnChannel(c chan int) { <-c }

//go:noinline
func parkedOnMutex(mu *sync.Mutex) { mu.Lock() }

//go:noinline
func parkedInSelect(cs []chan int) int {
	select {
	case v := <-cs[0]:
		return v
	case v := <-cs[1]:
		return v
	case v := <-cs[2]:
		return v
	case v := <-cs[3]:
		return v
	case v := <-cs[4]:
		return v
	case v := <-cs[5]:
		return v
	case v := <-cs[6]:
		return v
	case v := <-cs[7]:
		return v
	}
}

//go:noinline
func parkedWithLabels(c chan int) { <-c }

//go:noinline
func chainOuter(c chan int) int { return chainMiddle(c) + 1 }

//go:noinline
func chainMiddle(c chan int) int { return chainInner(c) + 1 }

//go:noinline
func chainInner(c chan int) int { return <-c }

func main() {
	var mu sync.Mutex
	mu.Lock()
	c := make(chan int)
	chain := make(chan int)
	cs := make([]chan int, 8)
	for i := range cs {
		cs[i] = make(chan int)
	}
	for i := 0; i < 3; i++ {
		go parkedInSleep()
		go parkedOnChannel(c)
		go parkedOnMutex(&mu)
		go parkedInSelect(cs)
		go chainOuter(chain)
	}
	labels := pprof.Labels("tenant", "acme", "request", "42")
	go pprof.Do(context.Background(), labels, func(context.Context) { parkedWithLabels(c) })
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(1)
	}
	go http.Serve(listener, nil)
	fmt.Printf("ready go %d\n", os.Getpid())
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		if lines.Text() == "gc" {
			runtime.GC()
			fmt.Println("gc done")
			continue
		}
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		fmt.Printf("%s\nend stacks\n", buf[:n])
	}
	select {}
}
