package hub

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
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
	// Receive blocks until the peer sends a data frame (returned and
	// otherwise ignored) or the connection fails.
	Receive() error
	// Close sends a close frame with code, best effort within deadline,
	// and closes the connection. It is safe to call more than once and from
	// any goroutine.
	Close(code int, deadline time.Time) error
	// LastActivity is when the peer last sent anything, pongs included.
	LastActivity() time.Time
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
	raw    net.Conn
	last   atomic.Int64 // unix nanoseconds of the last read
	closed atomic.Bool
}

func (t *wsTransport) touch() { t.last.Store(time.Now().UnixNano()) }

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
	t.raw.SetWriteDeadline(deadline)
	return frameCodec.Send(t.ws, rawFrame{websocket.TextFrame, frame})
}

func (t *wsTransport) Ping(deadline time.Time) error {
	t.raw.SetWriteDeadline(deadline)
	return frameCodec.Send(t.ws, rawFrame{websocket.PingFrame, nil})
}

func (t *wsTransport) Receive() error {
	var msg []byte
	err := websocket.Message.Receive(t.ws, &msg)
	if errors.Is(err, websocket.ErrFrameTooLarge) {
		return errTooBig
	}
	return err
}

var errTooBig = errors.New("gateway sent a frame larger than the limit")

func (t *wsTransport) Close(code int, deadline time.Time) error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	t.raw.SetWriteDeadline(deadline)
	payload := binary.BigEndian.AppendUint16(nil, uint16(code))
	err := frameCodec.Send(t.ws, rawFrame{websocket.CloseFrame, payload})
	return errors.Join(err, t.raw.Close())
}

// activityReader records the time of every successful read.
type activityReader struct {
	r io.Reader
	t *wsTransport
}

func (a activityReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		a.t.touch()
	}
	return n, err
}

// hijackWriter hands the websocket library a hijacked connection whose reads
// are timestamped and whose server deadlines are cleared.
type hijackWriter struct {
	http.ResponseWriter
	t *wsTransport
}

func (w hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, buf, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The http.Server's read and write timeouts stay on a hijacked
	// connection; the hub sets its own deadlines from here on.
	conn.SetDeadline(time.Time{})
	w.t.raw = conn
	w.t.touch()
	r := bufio.NewReaderSize(activityReader{buf.Reader, w.t}, 1024)
	return conn, bufio.NewReadWriter(r, buf.Writer), nil
}

// upgrade performs the WebSocket handshake on w and r and calls serve with
// the transport; it returns when serve does. It must only be called for an
// HTTP/1.1 request whose writer can be hijacked (the library panics
// otherwise), which canUpgrade checks.
func upgrade(w http.ResponseWriter, r *http.Request, serve func(Transport)) {
	t := &wsTransport{}
	srv := websocket.Server{
		// Gateways are not browsers and send no Origin header, which
		// websocket.Handler would refuse; any origin is fine here since the
		// api-key was already verified.
		Handshake: func(*websocket.Config, *http.Request) error { return nil },
		Handler: func(ws *websocket.Conn) {
			ws.MaxPayloadBytes = maxMessageBytes
			t.ws = ws
			serve(t)
		},
	}
	srv.ServeHTTP(hijackWriter{w, t}, r)
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
