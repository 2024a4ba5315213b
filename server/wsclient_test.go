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
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// wsClient is a minimal WebSocket client over TLS that exposes what the
// x/net/websocket client hides: close codes, pings (it can stop answering
// them) and raw frames (it can send a huge one).
//
// A client from mustDial behaves like a real gateway: a goroutine of its own
// reads every frame as it arrives and answers pings at once, and hands the
// other frames to the test (readFrame, next, closeCode). So a connection
// the server ends is ended for what the test does, never for silence. A
// client from dialWS reads only when the test does (a stalled gateway).
type wsClient struct {
	t      testing.TB
	conn   net.Conn
	br     *bufio.Reader
	noPong atomic.Bool // do not answer pings
	// gate, when set, paces the reader goroutine: it takes a value from
	// the channel before each frame it reads (a closed one lets it read
	// freely again), as a gateway slower than the server reads.
	gate atomic.Pointer[chan struct{}]

	wmu    sync.Mutex    // one writer at a time: the test and the pong answers
	frames chan wsFrame  // the frames the reader hands over, when it runs
	ended  chan struct{} // closed when the reader stops
	endErr error         // why it stopped, set before ended is closed
	pongs  atomic.Int64  // pings answered
	pinged chan struct{} // signalled on each ping answered
}

// wsFrame is a frame the reader goroutine read, with when it came.
type wsFrame struct {
	op      byte
	payload []byte
	at      time.Time
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
	return dialWSBuffer(t, baseURL, apiKey, 0)
}

// dialWSBuffer is dialWS with the socket's receive buffer set to
// readBuffer bytes (the system's when 0): a small one
// keeps the kernel from absorbing what a slow gateway has not read.
func dialWSBuffer(t testing.TB, baseURL, apiKey string, readBuffer int) (*wsClient, *http.Response) {
	t.Helper()
	u, _ := url.Parse(baseURL)
	raw, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	if readBuffer > 0 {
		if err := raw.(*net.TCPConn).SetReadBuffer(readBuffer); err != nil {
			t.Fatal(err)
		}
	}
	conn := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err := conn.Handshake(); err != nil {
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

// answerPings starts the reader goroutine: from now on the client reads
// every frame as it comes, answers pings (unless noPong) and hands the other
// frames to readFrame. A test that stops reading for a while no longer
// stops the pongs, as a gateway busy with an event still answers them.
func (c *wsClient) answerPings() {
	c.frames = make(chan wsFrame, 1024)
	c.ended = make(chan struct{})
	c.pinged = make(chan struct{}, 1)
	go func() {
		defer close(c.ended)
		for {
			if gate := c.gate.Load(); gate != nil {
				<-*gate
			}
			op, payload, err := c.readRaw(0)
			if err != nil {
				c.endErr = err
				return
			}
			if op == opPing && !c.noPong.Load() {
				c.writeFrame(opPong, payload)
				c.pongs.Add(1)
				select {
				case c.pinged <- struct{}{}:
				default:
				}
				continue
			}
			if op == opPing {
				continue
			}
			c.frames <- wsFrame{op, payload, time.Now()}
		}
	}()
}

// mustDial connects and returns the client with its ack.
func mustDial(t testing.TB, baseURL, apiKey string) (*wsClient, map[string]any) {
	t.Helper()
	return mustDialBuffer(t, baseURL, apiKey, 0)
}

// mustDialBuffer is mustDial with a receive buffer of readBuffer bytes
// (dialWSBuffer).
func mustDialBuffer(t testing.TB, baseURL, apiKey string, readBuffer int) (*wsClient, map[string]any) {
	t.Helper()
	c, resp := dialWSBuffer(t, baseURL, apiKey, readBuffer)
	if c == nil {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("handshake refused: %d %s", resp.StatusCode, body)
	}
	c.answerPings()
	ack := c.next(5 * time.Second)
	if ack["type"] != "connection.ack" {
		t.Fatalf("first frame %v, want connection.ack", ack)
	}
	return c, ack
}

// errReadTimeout is readFrame's timeout when the reader goroutine reads.
var errReadTimeout = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string   { return "read timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// readFrame returns the next frame within timeout: from the reader
// goroutine when it runs (pings answered there and not returned), else
// read from the socket here.
func (c *wsClient) readFrame(timeout time.Duration) (byte, []byte, error) {
	if c.frames == nil {
		return c.readRaw(timeout)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case f := <-c.frames:
		return f.op, f.payload, nil
	default:
	}
	select {
	case f := <-c.frames:
		return f.op, f.payload, nil
	case <-c.ended:
		select { // frames read before the end come first
		case f := <-c.frames:
			return f.op, f.payload, nil
		default:
		}
		return 0, nil, c.endErr
	case <-timer.C:
		return 0, nil, errReadTimeout
	}
}

// readRaw reads one frame from the socket, within timeout (none when 0).
func (c *wsClient) readRaw(timeout time.Duration) (byte, []byte, error) {
	if timeout > 0 {
		c.conn.SetReadDeadline(time.Now().Add(timeout))
	} else {
		c.conn.SetReadDeadline(time.Time{})
	}
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
	c.wmu.Lock()
	defer c.wmu.Unlock()
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
			if !c.noPong.Load() {
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
// fails on a timeout. It answers no ping itself: a client without the
// reader goroutine falls silent while it waits.
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

// closedBy waits for the server's close frame and returns its code,
// failing unless it came within `within` of since: for a connection the
// server ends for what the test did at since (a revocation, a deletion),
// with within well under the silence timeout and the client answering pings
// all the while (answerPings), so that the silence check cannot be what
// ended it.
func (c *wsClient) closedBy(since time.Time, within time.Duration) int {
	c.t.Helper()
	if c.frames == nil {
		c.t.Fatal("closedBy needs a client that answers pings (mustDial)")
	}
	timer := time.NewTimer(time.Until(since.Add(within)))
	defer timer.Stop()
	for {
		select {
		case f := <-c.frames:
			if f.op != opClose {
				continue
			}
			if took := f.at.Sub(since); took > within {
				c.t.Fatalf("closed with code %d after %s, want within %s", closeCode(f.payload), took, within)
			}
			return closeCode(f.payload)
		case <-c.ended:
			if len(c.frames) > 0 {
				continue
			}
			c.t.Fatalf("connection dropped without a close frame: %v", c.endErr)
		case <-timer.C:
			c.t.Fatalf("no close frame within %s; pings answered meanwhile: %d", within, c.pongs.Load())
		}
	}
}
