// A Go program with a known function for the dynamic probe tests: Checkout takes an
// int64, a string and an int64 in registers (Go's register ABI) and returns two values.
//
//	checkout N USER
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

//go:noinline
func Checkout(cartID int64, user string, qty int64) (int64, error) {
	if qty == 0 {
		return 0, errors.New("empty cart")
	}
	// Parks the goroutine: it may resume on another thread before it returns.
	time.Sleep(20 * time.Millisecond)
	return cartID*10 + int64(len(user)) + qty, nil
}

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	total := int64(0)
	for i := 0; i < n; i++ {
		r, _ := Checkout(int64(i), os.Args[2], 3)
		total += r
	}
	fmt.Println("done", total)
}
