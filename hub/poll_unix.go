//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package hub

import "syscall"

// canWait: waitReadable can wait on a socket here.
const canWait = true

// waitReadable returns once sock has something to read (data, end of
// stream or an error), parking the goroutine in the runtime's poller
// without reading anything. The peek goes through the poller's
// try-then-wait protocol, so readiness that came before the call is seen.
func waitReadable(sock syscall.RawConn) error {
	var b [1]byte
	return sock.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN && err != syscall.EWOULDBLOCK
	})
}
