package hub

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tlsHub serves h's gateway channel on a real TLS listener; every
// connection is gateway "g<n>".
func tlsHub(t *testing.T, h *Hub) *httptest.Server {
	var n atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, why := CanUpgrade(w, r); !ok {
			http.Error(w, why, http.StatusBadRequest)
			return
		}
		id := fmt.Sprint("g", n.Add(1))
		if err := h.Accept(w, r, Identity{GatewayID: id, OrganizationID: "o", TokenID: "t" + id}); err != nil {
			t.Error(err)
		}
	}))
	srv.StartTLS()
	t.Cleanup(func() {
		h.Shutdown(t.Context())
		srv.Close()
	})
	return srv
}

// rawGateway is a WebSocket client written by hand, to see pings and to
// send frames exactly as the test wants them on the wire.
type rawGateway struct {
	conn *tls.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, srv *httptest.Server) *rawGateway {
	t.Helper()
	conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	g := &rawGateway{conn: conn, r: bufio.NewReader(conn)}
	resp, err := http.ReadResponse(g.r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return g
}

// frame encodes a masked client frame.
func clientFrame(opcode byte, payload []byte) []byte {
	mask := [4]byte{1, 2, 3, 4}
	f := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	default:
		f = append(f, 0x80|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	}
	f = append(f, mask[:]...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	return f
}

// next reads one server frame (servers do not mask).
func (g *rawGateway) next() (opcode byte, payload []byte, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(g.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(hdr[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		io.ReadFull(g.r, b[:])
		n = int(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		io.ReadFull(g.r, b[:])
		n = int(binary.BigEndian.Uint64(b[:]))
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(g.r, payload)
	return hdr[0] & 0x0f, payload, err
}

// waitGoroutines waits until the process runs want goroutines, and fails
// with the count it saw last if that does not happen within 5 s.
func waitGoroutines(t *testing.T, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() != want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%s: %d goroutines, want %d\n%s", what, runtime.NumGoroutine(), want, buf)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settledGoroutines is the number of goroutines once those of earlier
// tests have returned: the same count, read 20 ms apart, three times.
func settledGoroutines() int {
	n, same := runtime.NumGoroutine(), 0
	for same < 3 {
		time.Sleep(20 * time.Millisecond)
		if m := runtime.NumGoroutine(); m == n {
			same++
		} else {
			n, same = m, 0
		}
	}
	return n
}

// TestIdleConnectionHoldsOneGoroutine: an idle gateway connection costs
// one goroutine (its reader), plus one ticker for the whole hub. Before,
// each connection also kept a writer goroutine and its ticker.
func TestIdleConnectionHoldsOneGoroutine(t *testing.T) {
	h := New(Config{PingInterval: time.Hour, Timeout: 2 * time.Hour}, nil)
	srv := tlsHub(t, h)
	base := settledGoroutines()
	const n = 10
	for i := range n {
		g := dialRaw(t, srv)
		if op, f, err := g.next(); err != nil || op != 1 || !strings.Contains(string(f), "connection.ack") {
			t.Fatalf("connection %d: first frame %d %q %v", i, op, f, err)
		}
	}
	waitUntil(t, func() bool { return h.Count() == n })
	waitGoroutines(t, base+n+1, fmt.Sprintf("%d idle connections", n))
}

// TestHeartbeatsWithoutWriterGoroutine: an idle connection gets its pings
// though no writer goroutine stays with it, stays up while it answers them,
// and is closed (1008) once it goes silent past the timeout.
func TestHeartbeatsWithoutWriterGoroutine(t *testing.T) {
	h := New(Config{PingInterval: 30 * time.Millisecond, Timeout: time.Second}, nil)
	srv := tlsHub(t, h)
	g := dialRaw(t, srv)
	if op, _, err := g.next(); err != nil || op != 1 {
		t.Fatalf("ack: %d %v", op, err)
	}
	var answer atomic.Bool
	answer.Store(true)
	pings, closed := make(chan int, 100), make(chan uint16, 1)
	go func() { // the gateway: answers pings while told to
		defer close(pings)
		for n := 1; ; {
			op, p, err := g.next()
			switch {
			case err != nil:
				return
			case op == 9:
				if answer.Load() {
					g.conn.Write(clientFrame(10, p))
				}
				pings <- n
				n++
			case op == 8 && len(p) >= 2:
				closed <- binary.BigEndian.Uint16(p)
				return
			}
		}
	}()
	// Between pings, no goroutine is in a writer; pings keep coming.
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		if !strings.Contains(string(buf), "hub.(*Conn).writeLoop") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a writer goroutine stays with an idle connection:\n%s", buf)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for n := range pings { // 1.5 s of pings, longer than the timeout
		if n == 50 {
			break
		}
	}
	if h.TimedOut.Load() != 0 || h.Count() != 1 {
		t.Fatalf("timed out %d, connections %d: a connection answering pings was dropped", h.TimedOut.Load(), h.Count())
	}
	answer.Store(false) // silent from now on: pings, then a 1008 close
	for range pings {
	}
	select {
	case code := <-closed:
		if code != ClosePolicy {
			t.Fatalf("close code %d, want %d", code, ClosePolicy)
		}
	default:
		t.Fatal("connection ended without a close frame")
	}
	waitUntil(t, func() bool { return h.TimedOut.Load() == 1 && h.Count() == 0 })
}

// TestFramesBufferedAboveTheSocketAreRead: frames that crypto/tls already
// read off the socket (here, several in one TLS record, more than the
// connection's read buffer holds) are read although the socket itself has
// nothing more to say. A reader that only waited for the socket would wait
// forever.
func TestFramesBufferedAboveTheSocketAreRead(t *testing.T) {
	got := make(chan string, 16)
	h := New(Config{PingInterval: time.Hour, Timeout: 2 * time.Hour, OnMessage: func(_ *Conn, f []byte) { got <- string(f) }}, nil)
	srv := tlsHub(t, h)
	g := dialRaw(t, srv)
	if op, _, err := g.next(); err != nil || op != 1 {
		t.Fatalf("ack: %d %v", op, err)
	}
	var record []byte
	const frames = 8
	for i := range frames {
		record = append(record, clientFrame(1, []byte(fmt.Sprintf("%d%s", i, strings.Repeat("x", 299))))...)
	}
	if _, err := g.conn.Write(record); err != nil { // one record of 2.4 KB
		t.Fatal(err)
	}
	for i := range frames {
		select {
		case f := <-got:
			if !strings.HasPrefix(f, fmt.Sprint(i)) || len(f) != 300 {
				t.Fatalf("frame %d: %.20q (%d bytes)", i, f, len(f))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("frame %d of %d never read", i, frames)
		}
	}
}

// TestMeasureIdleMemory reports the stack and heap of idle connections
// (PLATFORM_HUB_MEASURE=<connections>); it asserts nothing.
func TestMeasureIdleMemory(t *testing.T) {
	n := 0
	fmt.Sscan(os.Getenv("PLATFORM_HUB_MEASURE"), &n)
	if n == 0 {
		t.Skip("set PLATFORM_HUB_MEASURE to a number of connections")
	}
	h := New(Config{PingInterval: 200 * time.Millisecond, Timeout: time.Hour}, nil)
	srv := tlsHub(t, h)
	stats := func() runtime.MemStats {
		for range 4 {
			runtime.GC()
		}
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m
	}
	before := stats()
	gs := make([]*rawGateway, n)
	for i := range gs {
		gs[i] = dialRaw(t, srv)
		gs[i].next()
	}
	time.Sleep(time.Second) // a few pings
	after := stats()
	t.Logf("%d connections: stack %.0f B each (server side only: the clients have no goroutines); heap, both sides, %.0f B each",
		n, float64(after.StackInuse-before.StackInuse)/float64(n), float64(after.HeapAlloc-before.HeapAlloc)/float64(n))
}
