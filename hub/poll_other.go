//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package hub

import "syscall"

// canWait: no readability wait here; an idle connection's goroutine
// blocks in its read instead.
const canWait = false

func waitReadable(syscall.RawConn) error { return nil }
