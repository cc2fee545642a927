// A Go target whose goroutine blocks inside C (a cgo call), for Go tests: prints
// "ready go PID" once it is in the call.
package main

/*
#include <unistd.h>
static void block_in_c(void) { for (;;) pause(); }
*/
import "C"

import (
	"fmt"
	"os"
)

//go:noinline
func callIntoC() { C.block_in_c() }

func main() {
	go func() {
		fmt.Printf("ready go %d\n", os.Getpid())
	}()
	callIntoC()
}
