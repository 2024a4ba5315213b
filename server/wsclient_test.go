package server

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// wsClient is a minimal WebSocket client over TLS that exposes what the
// x/net/websocket client hides: close codes, pings (it can stop answering
// them) and raw frames (it can send a huge one).
type wsClient struct {
	t       testing.TB
	conn    net.Conn
	br      *bufio.Reader
	noPong  bool // do not answer pings
	lastErr error
}

const (
	opText  = 1
	opClose = 8
	opPing  = 9
	opPong  = 10
)

// dialWS opens the gateway channel with the given api-key (none when empty).
// For a refused handshake it returns the HTTP response and a nil client.
func dialWS(t testing.TB, baseURL, apiKey string) (*wsClient, *http.Response) {
	t.Helper()
	u, _ := url.Parse(baseURL)
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 16)
	rand.Read(key)
	req := "GET /api/internal/v1/ws/gateways/connect HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
		base64.StdEncoding.EncodeToString(key) + "\r\n"
	if apiKey != "" {
		req += "api-key: " + apiKey + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		conn.Close()
		return nil, resp
	}
	c := &wsClient{t: t, conn: conn, br: br}
	t.Cleanup(func() { conn.Close() })
	return c, resp
}

// mustDial connects and returns the client with its ack.
func mustDial(t testing.TB, baseURL, apiKey string) (*wsClient, map[string]any) {
	t.Helper()
	c, resp := dialWS(t, baseURL, apiKey)
	if c == nil {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("handshake refused: %d %s", resp.StatusCode, body)
	}
	ack := c.next(time.Second)
	if ack["type"] != "connection.ack" {
		t.Fatalf("first frame %v, want connection.ack", ack)
	}
	return c, ack
}

// readFrame reads one frame; it answers pings unless noPong is set.
func (c *wsClient) readFrame(timeout time.Duration) (byte, []byte, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	var hdr [2]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return 0, nil, err
	}
	op := hdr[0] & 0x0f
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(c.br, payload); err != nil {
		return 0, nil, err
	}
	return op, payload, nil
}

// writeFrame writes one masked frame, as clients must.
func (c *wsClient) writeFrame(op byte, payload []byte) error {
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.conn.Write(encodeFrame(op, payload))
	return err
}

func encodeFrame(op byte, payload []byte) []byte {
	hdr := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126)
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	mask := make([]byte, 4)
	rand.Read(mask)
	masked := make([]byte, len(payload))
	for i, b := range payload {
		masked[i] = b ^ mask[i%4]
	}
	return append(append(hdr, mask...), masked...)
}

// next returns the next text frame as JSON, answering pings on the way. It
// fails the test on a close or a timeout.
func (c *wsClient) next(timeout time.Duration) map[string]any {
	c.t.Helper()
	m, err := c.tryNext(timeout)
	if err != nil {
		c.t.Fatalf("waiting for a frame: %v", err)
	}
	return m
}

func (c *wsClient) tryNext(timeout time.Duration) (map[string]any, error) {
	deadline := time.Now().Add(timeout)
	for {
		op, payload, err := c.readFrame(time.Until(deadline))
		if err != nil {
			return nil, err
		}
		switch op {
		case opPing:
			if !c.noPong {
				c.writeFrame(opPong, payload)
			}
		case opClose:
			return nil, fmt.Errorf("closed with code %d", closeCode(payload))
		case opText:
			var m map[string]any
			if err := json.Unmarshal(payload, &m); err != nil {
				return nil, fmt.Errorf("frame %q is not JSON: %v", payload, err)
			}
			return m, nil
		}
	}
}

// closeCode reads until the server's close frame and returns its code; it
// fails on a timeout.
func (c *wsClient) closeCode(timeout time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		op, payload, err := c.readFrame(time.Until(deadline))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.t.Fatalf("no close frame within %s", timeout)
			}
			return -1 // connection dropped without a close frame
		}
		if op == opClose {
			return closeCode(payload)
		}
	}
}

func closeCode(payload []byte) int {
	if len(payload) < 2 {
		return 1005
	}
	return int(binary.BigEndian.Uint16(payload))
}
