package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// httpsOnlyListener answers a client that speaks plain HTTP to the TLS port
// (http:// instead of https://) with the contract's JSON error body, where
// Go's server would answer a text 400. http.Server has no hook for this, so
// each accepted connection looks at its first byte when the TLS server first
// reads it, in that connection's own goroutine (Accept never waits on a
// client): a TLS handshake begins with 0x16; anything else is answered with
// a minimal HTTP/1.1 400 and closed.
type httpsOnlyListener struct{ net.Listener }

func (l httpsOnlyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c}, nil
}

// tlsHandshakeRecord is the first byte of every TLS handshake.
const tlsHandshakeRecord = 0x16

// errPlainHTTP ends a connection that did not begin with a TLS handshake.
var errPlainHTTP = errors.New("plain HTTP on the TLS port: answered with a 400")

type sniffConn struct {
	net.Conn
	once sync.Once
	err  error
}

func (c *sniffConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return c.Conn.Read(p)
	}
	n, handled := 0, false
	c.once.Do(func() {
		handled = true
		n, c.err = c.Conn.Read(p[:1])
		if n == 1 && p[0] != tlsHandshakeRecord {
			c.answerPlain()
			n, c.err = 0, errPlainHTTP
		}
	})
	if handled {
		return n, c.err
	}
	if c.err == errPlainHTTP {
		return 0, c.err
	}
	return c.Conn.Read(p)
}

// plainHTTPBody is the answer to a plain HTTP request on the TLS port.
var plainHTTPBody = func() []byte {
	b, _ := json.Marshal(map[string]any{"code": http.StatusBadRequest, "message": http.StatusText(http.StatusBadRequest),
		"description": "this port speaks HTTPS only: the client sent plain HTTP; use an https:// URL"})
	return append(b, '\n')
}()

// answerPlain writes the 400, lets the client's request drain for a moment
// (closing with unread data would reset the connection before the client
// reads the answer), and closes.
func (c *sniffConn) answerPlain() {
	c.Conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c.Conn, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		len(plainHTTPBody), plainHTTPBody)
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.Conn.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c.Conn, 64<<10))
	c.Conn.Close()
}

// NetConn is the connection c wraps: the gateway hub reaches the socket
// through it, to wait for an idle connection to become readable without a
// read buffer in use.
func (c *sniffConn) NetConn() net.Conn { return c.Conn }
