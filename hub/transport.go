package hub

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/websocket"
)

// Transport is one gateway connection as the hub sees it. Connection
// management depends only on this, so the WebSocket library can change
// without touching the registry or the goroutines.
type Transport interface {
	// Send writes one text frame. Only the connection's writer calls it.
	Send(frame []byte, deadline time.Time) error
	// Ping writes a ping frame.
	Ping(deadline time.Time) error
	// Receive blocks until the peer sends a data frame, and returns it, or
	// the connection fails.
	Receive() ([]byte, error)
	// Close sends a close frame with code, best effort within deadline,
	// and closes the connection. It is safe to call more than once and from
	// any goroutine.
	Close(code int, deadline time.Time) error
	// LastActivity is when the peer last sent anything, pongs included.
	LastActivity() time.Time
	// Touch records activity the connection cannot see: the gateway
	// acted, elsewhere, on what it read here.
	Touch()
}

// Close codes of RFC 6455 the hub uses.
const (
	CloseNormal        = 1000
	CloseGoingAway     = 1001
	ClosePolicy        = 1008
	CloseTooBig        = 1009
	CloseServerFailure = 1011
)

// maxMessageBytes caps what a gateway may send in one frame: gateways send
// us nothing meaningful, so a large frame is misbehaviour, not data.
const maxMessageBytes = 4 << 10

// wsTransport is the golang.org/x/net/websocket Transport.
//
// Facts of that library this relies on: pongs are consumed inside it and
// never surface, so liveness comes from timestamping every read of the
// hijacked connection (activityReader); it has no Ping method, so pings go
// through a Codec whose marshal returns the ping opcode; Conn.Close always
// sends 1000, so close frames with other codes go through the same codec
// before the raw connection is closed.
type wsTransport struct {
	ws     *websocket.Conn
	br     *bufio.Reader // what ws reads from
	raw    net.Conn
	last   atomic.Int64 // unix nanoseconds of the last read
	closed atomic.Bool
	// closeSent is set once a close frame has gone out, by us or by the
	// library (which sends one by itself for a protocol error, such as an
	// unmasked frame, before it reports the connection closed).
	closeSent atomic.Bool
}

func (t *wsTransport) touch() { t.last.Store(time.Now().UnixNano()) }

func (t *wsTransport) Touch() { t.touch() }

func (t *wsTransport) LastActivity() time.Time { return time.Unix(0, t.last.Load()) }

// frameCodec sends a payload with a chosen opcode.
var frameCodec = websocket.Codec{
	Marshal: func(v any) ([]byte, byte, error) {
		f := v.(rawFrame)
		return f.data, f.opcode, nil
	},
}

type rawFrame struct {
	opcode byte
	data   []byte
}

func (t *wsTransport) Send(frame []byte, deadline time.Time) error {
	return t.send(rawFrame{websocket.TextFrame, frame}, deadline)
}

func (t *wsTransport) Ping(deadline time.Time) error {
	return t.send(rawFrame{websocket.PingFrame, nil}, deadline)
}

// send writes one frame under deadline, then clears the deadline: the
// library answers a gateway's pings from the reading goroutine, and that
// pong must not inherit a deadline long past.
func (t *wsTransport) send(f rawFrame, deadline time.Time) error {
	t.raw.SetWriteDeadline(deadline)
	err := frameCodec.Send(t.ws, f)
	if err == nil {
		t.raw.SetWriteDeadline(time.Time{})
	}
	return err
}

func (t *wsTransport) Receive() ([]byte, error) {
	// Pongs (the answers to our pings) are read off here, not by the
	// library, which would look for the next frame at once, blocking deep
	// in its frame reader: between frames the goroutine waits here, at a
	// shallow depth, and the runtime can shrink its stack.
	for t.br != nil {
		hdr, err := t.br.Peek(2)
		if err != nil {
			return nil, err
		}
		// A final, masked pong of at most 125 bytes; anything else is the
		// library's to read (and refuse).
		if hdr[0] != 0x80|websocket.PongFrame || hdr[1]&0x80 == 0 || hdr[1]&0x7f > 125 {
			break
		}
		if _, err := t.br.Discard(2 + 4 + int(hdr[1]&0x7f)); err != nil {
			return nil, err
		}
	}
	var msg []byte
	err := websocket.Message.Receive(t.ws, &msg)
	if errors.Is(err, websocket.ErrFrameTooLarge) {
		return nil, errTooBig
	}
	return msg, err
}

var errTooBig = errors.New("gateway sent a frame larger than the limit")

func (t *wsTransport) Close(code int, deadline time.Time) error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	var err error
	if !t.closeSent.Load() {
		t.raw.SetWriteDeadline(deadline)
		payload := binary.BigEndian.AppendUint16(nil, uint16(code))
		err = frameCodec.Send(t.ws, rawFrame{websocket.CloseFrame, payload})
	}
	return errors.Join(err, t.raw.Close())
}

// closeWatcher passes the outgoing byte stream through and follows its
// frame headers, to note when a close frame goes out: RFC 6455 allows one
// close frame per side, and the library writes its own for some protocol
// errors without telling its caller.
//
// Once frames flow it also gathers each frame and writes it whole, in one
// TLS record, when its last byte comes: the library's write buffer can then
// be a few bytes (see upgrade), and an idle connection holds none; the
// frame is gathered in a buffer taken from a pool for the time of the
// write.
type closeWatcher struct {
	w      io.Writer
	t      *wsTransport
	frames atomic.Bool // set after the handshake's HTTP answer: frames from now on
	hdr    []byte      // the header read so far of the frame being written
	skip   int64       // payload bytes of the current frame still to pass
	out    *[]byte     // what was written of frames not yet complete
}

// framePool holds the buffers frames are gathered in.
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func (c *closeWatcher) Write(p []byte) (int, error) {
	if !c.frames.Load() {
		return c.w.Write(p)
	}
	for rest := p; len(rest) > 0; {
		if c.skip > 0 {
			n := min(int64(len(rest)), c.skip)
			c.skip -= n
			rest = rest[n:]
			continue
		}
		c.hdr = append(c.hdr, rest[0])
		rest = rest[1:]
		if len(c.hdr) < 2 {
			continue
		}
		need := 2
		switch c.hdr[1] & 0x7f {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if c.hdr[1]&0x80 != 0 {
			need += 4 // masked (never, from a server)
		}
		if len(c.hdr) < need {
			continue
		}
		length := int64(c.hdr[1] & 0x7f)
		switch length {
		case 126:
			length = int64(binary.BigEndian.Uint16(c.hdr[2:4]))
		case 127:
			length = int64(binary.BigEndian.Uint64(c.hdr[2:10]) &^ (1 << 63))
		}
		if c.hdr[0]&0x0f == websocket.CloseFrame {
			c.t.closeSent.Store(true)
		}
		c.hdr, c.skip = c.hdr[:0], length
	}
	if c.out == nil {
		if len(c.hdr) == 0 && c.skip == 0 {
			return c.w.Write(p) // whole frames: nothing to gather
		}
		c.out = framePool.Get().(*[]byte)
	}
	*c.out = append(*c.out, p...)
	if len(c.hdr) > 0 || c.skip > 0 {
		return len(p), nil // the frame is not complete yet
	}
	_, err := c.w.Write(*c.out)
	if cap(*c.out) <= 64<<10 {
		*c.out = (*c.out)[:0]
		framePool.Put(c.out)
	}
	c.out = nil
	c.hdr = nil
	return len(p), err
}

// idleReader is what the connection's read buffer reads from. It records
// the time of every successful read, and, once the handshake is done, waits
// for the socket to become readable before reading (waitReadable): an idle
// gateway's reading goroutine then sleeps at a shallow depth, in a stack
// the runtime can shrink, instead of deep in crypto/tls's record reader.
type idleReader struct {
	conn    net.Conn
	t       *wsTransport
	pending []byte // what the client sent right after its upgrade request
	// sock is the socket under conn (nil where it cannot be reached or
	// waited on: then reads just block); above is set when conn buffers
	// what it read from sock (TLS).
	sock  syscall.RawConn
	above bool
	wait  atomic.Bool // set after the handshake
}

func (r *idleReader) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		if r.pending = r.pending[n:]; len(r.pending) == 0 {
			r.pending = nil
		}
		r.t.touch()
		return n, nil
	}
	if r.sock != nil && r.wait.Load() {
		if r.above {
			// TLS may hold bytes already read from the socket (the rest
			// of a record, or a whole record that came with the last): a
			// read that may not wait for the socket returns them.
			r.conn.SetReadDeadline(expired)
			n, err := r.conn.Read(p)
			r.conn.SetReadDeadline(time.Time{})
			if n > 0 {
				r.t.touch()
				return n, nil
			}
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return 0, err
			}
		}
		if err := waitReadable(r.sock); err != nil {
			return 0, err
		}
	}
	n, err := r.conn.Read(p)
	if n > 0 {
		r.t.touch()
	}
	return n, err
}

// expired is a deadline long past.
var expired = time.Unix(1, 0)

// socketOf is the socket under c, reached through crypto/tls and through
// wrappers that have a NetConn method, and whether anything above it may
// buffer (c is not the socket itself).
func socketOf(c net.Conn) (syscall.RawConn, bool) {
	above := false
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c, above = u.NetConn(), true
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	return rc, above
}

// hijacked is the ResponseWriter the websocket library sees: its Hijack
// hands over a connection that was already taken from net/http.
type hijacked struct {
	conn net.Conn
	rw   *bufio.ReadWriter
}

func (h hijacked) Header() http.Header         { return http.Header{} }
func (h hijacked) Write(b []byte) (int, error) { return h.rw.Write(b) }
func (h hijacked) WriteHeader(int)             {}
func (h hijacked) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, h.rw, nil
}

// connBufferSize is the read and write buffer of a gateway connection in
// its handshake; after it, the read buffer is readBufferSize and the write
// buffer writeBufferSize (the frame is gathered by closeWatcher).
const (
	connBufferSize  = 512
	readBufferSize  = 128
	writeBufferSize = 16
)

// handshakeTimeout bounds the WebSocket handshake after the hijack.
const handshakeTimeout = 10 * time.Second

// upgrade takes the connection from net/http, then performs the WebSocket
// handshake and runs serve on a goroutine of its own, and returns at once.
//
// An idle connection holds its reading goroutine, parked until the socket
// is readable (idleReader), and its small buffers: no writer goroutine, no
// timer.
//
// Returning lets net/http release what it holds for the request (its 4 KiB
// read and write buffers, the response, the request goroutine's grown
// stack), which would otherwise stay alive as long as the gateway is
// connected: most of an idle connection's memory. Reads are timestamped
// (activityReader) and the buffers are small ones of our own. Bytes the
// client sent right after its upgrade request are kept. The caller must
// have checked CanUpgrade.
func upgrade(w http.ResponseWriter, r *http.Request, serve func(Transport) (read func())) error {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return err
	}
	// The http.Server's timeouts stay on a hijacked connection: replace
	// them with the handshake's own, cleared once it is done.
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	t := &wsTransport{raw: conn}
	t.touch()
	src := &idleReader{conn: conn, t: t}
	if canWait {
		src.sock, src.above = socketOf(conn)
	}
	if n := buf.Reader.Buffered(); n > 0 {
		pending, _ := buf.Reader.Peek(n)
		src.pending = bytes.Clone(pending)
	}
	watcher := &closeWatcher{w: conn, t: t}
	rw := bufio.NewReadWriter(bufio.NewReaderSize(src, connBufferSize),
		bufio.NewWriterSize(watcher, connBufferSize))
	req := slimRequest(r)
	go func() {
		handshaken := false
		srv := websocket.Server{
			// Gateways are not browsers and send no Origin header, which
			// websocket.Handler would refuse; any origin is fine here since
			// the api-key was already verified.
			Handshake: func(*websocket.Config, *http.Request) error { return nil },
			Handler: func(ws *websocket.Conn) {
				watcher.frames.Store(true) // the 101 answer has been flushed
				ws.MaxPayloadBytes = maxMessageBytes
				t.ws = ws
				handshaken = true
			},
		}
		// The library closes the connection it was handed when the handler
		// returns: it gets one whose Close does nothing, so that the
		// connection outlives this goroutine.
		srv.ServeHTTP(hijacked{keepOpen{conn}, rw}, req)
		if !handshaken {
			conn.Close()
			return
		}
		// The websocket.Conn keeps its request; nothing reads it after the
		// handshake.
		*req = http.Request{}
		// The library keeps pointers to the buffers it was given: they are
		// replaced in place by smaller ones. Nothing was read ahead (the
		// handshake reads the request, not the buffer); a frame is written
		// whole by closeWatcher, whatever the write buffer's size.
		if rw.Reader.Buffered() == 0 {
			*rw.Reader = *bufio.NewReaderSize(src, readBufferSize)
		}
		if rw.Writer.Buffered() == 0 {
			*rw.Writer = *bufio.NewWriterSize(watcher, writeBufferSize)
		}
		conn.SetDeadline(time.Time{})
		t.br = rw.Reader
		src.wait.Store(true)
		// The connection is set up here, then read on a goroutine of its
		// own: this one's stack grew in the handshake (its TLS write) and
		// the setup, and an idle connection should keep a small one.
		if read := serve(t); read != nil {
			go read()
		}
	}()
	return nil
}

// keepOpen is a connection whose Close does nothing.
type keepOpen struct{ net.Conn }

func (keepOpen) Close() error { return nil }

// slimRequest copies what the handshake reads from r. The websocket.Conn
// keeps its request for its whole life, and a gateway connection should not
// keep every header its upgrade request carried.
func slimRequest(r *http.Request) *http.Request {
	s := &http.Request{Method: r.Method, URL: r.URL, Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
		Host: r.Host, RemoteAddr: r.RemoteAddr, TLS: r.TLS, Header: http.Header{}}
	for _, k := range []string{"Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Protocol", "Origin"} {
		if v := r.Header.Values(k); v != nil {
			s.Header[k] = v
		}
	}
	return s
}

// CanUpgrade reports whether r is a WebSocket upgrade request this server
// can take over, and if not, why.
func CanUpgrade(w http.ResponseWriter, r *http.Request) (bool, string) {
	if r.ProtoMajor != 1 {
		return false, "the gateway channel needs HTTP/1.1 (a WebSocket cannot run over HTTP/2); disable HTTP/2 in the client"
	}
	if !headerHas(r.Header, "Connection", "upgrade") || !headerHas(r.Header, "Upgrade", "websocket") {
		return false, "this route only accepts WebSocket upgrade requests (Connection: Upgrade, Upgrade: websocket)"
	}
	// Checked here, where the caller can still answer with the JSON error
	// body: the library would answer these with a plain-text 400.
	if v := r.Header.Get("Sec-Websocket-Version"); v != "13" {
		return false, fmt.Sprintf("Sec-WebSocket-Version must be 13 (RFC 6455), not %q", v)
	}
	if key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-Websocket-Key")); err != nil || len(key) != 16 {
		return false, "Sec-WebSocket-Key must be 16 random bytes in base64 (RFC 6455)"
	}
	if _, ok := unwrapHijacker(w); !ok {
		return false, "this connection cannot be upgraded"
	}
	return true, ""
}

func unwrapHijacker(w http.ResponseWriter) (http.Hijacker, bool) {
	for {
		if h, ok := w.(http.Hijacker); ok {
			return h, true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil, false
		}
		w = u.Unwrap()
	}
}

func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}
