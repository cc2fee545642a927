// A Go target for Go-table tests: an HTTP server on a loopback port with goroutines parked
// in known functions. Prints "ready go PID" once they are started.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
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
	fmt.Printf("ready go %d\n", os.Getpid())
	http.Serve(listener, nil)
}
