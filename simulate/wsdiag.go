package simulate

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
)

// ConnRecorder is a net.Conn that keeps the first bytes it reads (the
// server's answer to the WebSocket handshake) and the last ones (the close
// frame a connection ended with), so that a client can say why a
// connection was refused or ended: golang.org/x/net/websocket reports only
// "bad status" and io.EOF.
type ConnRecorder struct {
	net.Conn
	// KeepTail keeps the last bytes read, for CloseFrame; without it only
	// the first ones are kept (Refusal).
	KeepTail bool
	mu       sync.Mutex
	head     []byte
	tail     []byte
}

const (
	recordHead = 2 << 10 // a refusal's status, headers and JSON body
	recordTail = 256
)

func (c *ConnRecorder) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		if room := recordHead - len(c.head); room > 0 {
			c.head = append(c.head, p[:min(n, room)]...)
		}
		if c.KeepTail {
			c.tail = append(c.tail, p[:n]...)
			if len(c.tail) > recordTail {
				c.tail = append(c.tail[:0], c.tail[len(c.tail)-recordTail:]...)
			}
		}
		c.mu.Unlock()
	}
	return n, err
}

// Refusal describes the server's answer to a handshake it refused: the
// status and the description of its JSON error body, for example
// `401 Unauthorized: the token is revoked`.
func (c *ConnRecorder) Refusal() string {
	c.mu.Lock()
	head := bytes.Clone(c.head)
	c.mu.Unlock()
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
	if err != nil {
		return "no HTTP answer to the handshake"
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body) // what arrived; the rest does not matter
	var e struct {
		Description string `json:"description"`
	}
	if json.Unmarshal(body, &e) == nil && e.Description != "" {
		return resp.Status + ": " + e.Description
	}
	return resp.Status
}

// CloseFrame returns the code and reason of the close frame the server
// ended the connection with, when the last bytes read are one.
func (c *ConnRecorder) CloseFrame() (code int, reason string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.tail
	// A server's frames are not masked: 0x88, a 7-bit length (a close
	// payload is at most 125 bytes), the 2-byte code, the reason.
	for i := len(t) - 4; i >= 0; i-- {
		if t[i] == 0x88 && t[i+1] < 126 && i+2+int(t[i+1]) == len(t) && t[i+1] >= 2 {
			return int(binary.BigEndian.Uint16(t[i+2:])), string(t[i+4:]), true
		}
	}
	return 0, "", false
}

// CloseDescription words CloseFrame for a person: "close 1008 (policy)".
func (c *ConnRecorder) CloseDescription() string {
	code, reason, ok := c.CloseFrame()
	if !ok {
		return "the connection ended without a close frame"
	}
	s := fmt.Sprintf("close %d", code)
	if name := closeNames[code]; name != "" {
		s += " (" + name + ")"
	}
	if reason != "" {
		s += ": " + reason
	}
	return s
}

var closeNames = map[int]string{
	1000: "normal", 1001: "going away: the server is shutting down", 1008: "policy: a limit, a revoked token, or silence",
	1009: "a frame too big", 1011: "server error",
}
