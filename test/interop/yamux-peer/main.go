// Command yamux-peer is the Go reference peer for Underpass's yamux interop tests.
//
// It runs one github.com/hashicorp/yamux session over one TCP connection (as server or client),
// echoes every stream the remote opens, and can optionally open streams of its own, ping, and
// send a GoAway. Everything it does is reported as one event per line on stdout; the protocol
// is specified in ../README.md and must stay in sync with it. yamux's own log goes to stderr.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// ---------------------------------------------------------------------------------------------
// stdout event protocol

var stdoutMu sync.Mutex

// emit writes one event line to stdout. Lines are written whole under a lock, so events from
// concurrent goroutines never interleave; os.Stdout is unbuffered, so each line is flushed.
func emit(format string, args ...any) {
	line := oneLine(fmt.Sprintf(format, args...)) + "\n"
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	_, _ = os.Stdout.WriteString(line)
	_ = os.Stdout.Sync() // no-op for pipes; harmless
}

// oneLine makes free text safe to embed in a single event line.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\r", " ")
	return strings.ReplaceAll(s, "\n", " ")
}

var failed atomic.Bool

// fail reports an ERROR event and makes the process exit 1. Every failure goes through it, so
// the exit code is 1 exactly when at least one ERROR line was printed.
func fail(format string, args ...any) {
	failed.Store(true)
	emit("ERROR "+format, args...)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "yamux-peer: "+format+"\n", args...)
}

// ---------------------------------------------------------------------------------------------
// deterministic data

// splitmix64 is the data generator for opened streams: stream i (0-based) of a peer started
// with -seed S uses the initial state (S<<32)|i, and its bytes are the successive outputs of
// splitmix64, each serialized as 8 little-endian bytes, truncated to -size bytes.
type splitmix64 struct {
	state uint64
	buf   [8]byte
	off   int // next unread index into buf; 8 = empty
}

func newGen(seed uint64, index int) *splitmix64 {
	return &splitmix64{state: seed<<32 | uint64(uint32(index)), off: 8}
}

func (g *splitmix64) next() uint64 {
	g.state += 0x9E3779B97F4A7C15
	z := g.state
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// fill writes the next len(p) bytes of the stream into p.
func (g *splitmix64) fill(p []byte) {
	for len(p) > 0 && g.off < 8 {
		p[0] = g.buf[g.off]
		p = p[1:]
		g.off++
	}
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, g.next())
		p = p[8:]
	}
	if len(p) > 0 {
		binary.LittleEndian.PutUint64(g.buf[:], g.next())
		g.off = copy(p, g.buf[:])
	}
}

// ---------------------------------------------------------------------------------------------
// echo side

type echoStats struct {
	accepted atomic.Int64
	echoed   atomic.Int64 // bytes written back, over all accepted streams
}

// countingWriter counts bytes successfully written to the stream.
type countingWriter struct {
	w     io.Writer
	n     int64
	total *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.total.Add(int64(n))
	return n, err
}

// echo copies everything read from st back to it until the remote's FIN, then closes (FIN).
func echo(sess *yamux.Session, st *yamux.Stream, stats *echoStats) {
	id := st.StreamID()
	cw := &countingWriter{w: st, total: &stats.echoed}
	buf := make([]byte, 32*1024)
	_, err := io.CopyBuffer(cw, struct{ io.Reader }{st}, buf)
	if err != nil {
		fail("echo stream=%d bytes=%d: %v", id, cw.n, err)
		_ = st.Close()
		return
	}
	// yamux reports EOF both for the remote's FIN and for a dead session; our FIN is not sent
	// yet, so a closed session here means the echo was cut short.
	if sess.IsClosed() {
		fail("echo stream=%d bytes=%d: session closed before the echo finished", id, cw.n)
		return
	}
	if err := st.Close(); err != nil {
		fail("echo stream=%d bytes=%d: close: %v", id, cw.n, err)
		return
	}
	emit("ECHO-OK %d %d", id, cw.n)
}

// ---------------------------------------------------------------------------------------------
// opener side

const chunk = 32 * 1024

// openOne opens one stream, writes size bytes of stream index's data, closes its write side,
// and reads the echo until EOF concurrently. It returns nil if the echo matched.
func openOne(sess *yamux.Session, index int, seed uint64, size int64, timeout time.Duration) error {
	st, err := sess.OpenStream()
	if err != nil {
		return fmt.Errorf("stream=%d: open: %w", index, err)
	}
	id := st.StreamID()
	if timeout > 0 {
		_ = st.SetDeadline(time.Now().Add(timeout))
	}

	type wres struct {
		sum [32]byte
		err error
	}
	wdone := make(chan wres, 1)
	go func() {
		h := sha256.New()
		g := newGen(seed, index)
		buf := make([]byte, chunk)
		var written int64
		for written < size {
			n := int64(len(buf))
			if size-written < n {
				n = size - written
			}
			g.fill(buf[:n])
			h.Write(buf[:n])
			m, err := st.Write(buf[:n])
			written += int64(m)
			if err != nil {
				wdone <- wres{err: fmt.Errorf("write after %d of %d bytes: %w", written, size, err)}
				return
			}
		}
		if err := st.Close(); err != nil { // FIN: half-close, reads continue
			wdone <- wres{err: fmt.Errorf("close (FIN): %w", err)}
			return
		}
		var r wres
		copy(r.sum[:], h.Sum(nil))
		wdone <- r
	}()

	// Read the echo fully, checking it byte for byte against the expected data as it arrives
	// (to locate the first difference) and hashing it.
	h := sha256.New()
	g := newGen(seed, index)
	buf := make([]byte, chunk)
	want := make([]byte, chunk)
	var got int64
	firstDiff := int64(-1)
	var rerr error
	for {
		n, err := st.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			if firstDiff < 0 {
				// Bytes past size have no expected value; any such byte is a difference.
				m := int64(n)
				if got+m > size {
					m = size - got
					if m < 0 {
						m = 0
					}
				}
				g.fill(want[:m])
				if i := firstMismatch(buf[:m], want[:m]); i >= 0 {
					firstDiff = got + int64(i)
				} else if m < int64(n) {
					firstDiff = got + m
				}
			}
			got += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	w := <-wdone
	var gotSum [32]byte
	copy(gotSum[:], h.Sum(nil))

	switch {
	case w.err != nil:
		return fmt.Errorf("stream=%d id=%d: %v (read %d bytes of echo)", index, id, w.err, got)
	case rerr != nil:
		return fmt.Errorf("stream=%d id=%d: read echo after %d of %d bytes: %v", index, id, got, size, rerr)
	case got != size:
		return fmt.Errorf("stream=%d id=%d: echo length %d, want %d (first difference at offset %d)", index, id, got, size, firstDiff)
	case gotSum != w.sum || firstDiff >= 0:
		return fmt.Errorf("stream=%d id=%d: echo sha256 %s, want %s (first difference at offset %d)",
			index, id, hex.EncodeToString(gotSum[:]), hex.EncodeToString(w.sum[:]), firstDiff)
	}
	return nil
}

func firstMismatch(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// openAll runs -open N streams concurrently and reports OPEN-OK or OPEN-FAIL.
func openAll(sess *yamux.Session, n int, seed uint64, size int64, timeout time.Duration) {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = openOne(sess, i, seed, size, timeout)
		}(i)
	}
	wg.Wait()
	var first error
	nfail := 0
	for _, err := range errs {
		if err != nil {
			nfail++
			if first == nil {
				first = err
			}
			fail("open %v", err)
		}
	}
	if nfail == 0 {
		emit("OPEN-OK %d %d", n, size)
		return
	}
	emit("OPEN-FAIL %d of %d streams failed; first: %v", nfail, n, first)
}

// ---------------------------------------------------------------------------------------------
// main

type options struct {
	mode              string
	listen            string
	connect           string
	open              int
	size              int64
	seed              uint64
	openTimeout       time.Duration
	ping              bool
	window            uint
	keepalive         bool
	keepaliveInterval time.Duration
	goaway            bool
	stdinExit         bool
	connectTimeout    time.Duration
}

func parseFlags() options {
	var o options
	fs := flag.NewFlagSet("yamux-peer", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.StringVar(&o.mode, "mode", "", "server or client (required)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "server: TCP address to listen on; exactly one connection is accepted")
	fs.StringVar(&o.connect, "connect", "", "client: TCP address HOST:PORT to connect to (required with -mode client)")
	fs.IntVar(&o.open, "open", 0, "after READY, open this many streams concurrently and verify their echo")
	fs.Int64Var(&o.size, "size", 0, "bytes written on each stream opened by -open")
	fs.Uint64Var(&o.seed, "seed", 0, "data seed for -open: stream i uses splitmix64 state (seed<<32)|i")
	fs.DurationVar(&o.openTimeout, "open-timeout", 60*time.Second, "deadline for each -open stream (write and read); 0 = none")
	fs.BoolVar(&o.ping, "ping", false, "after READY, call session.Ping() once")
	fs.UintVar(&o.window, "window", 256*1024, "yamux MaxStreamWindowSize in bytes (yamux requires >= 262144)")
	fs.BoolVar(&o.keepalive, "keepalive", false, "enable yamux keepalive pings")
	fs.DurationVar(&o.keepaliveInterval, "keepalive-interval", 30*time.Second, "yamux KeepAliveInterval (with -keepalive)")
	fs.BoolVar(&o.goaway, "goaway", false, "after the -ping and -open work, call session.GoAway()")
	fs.BoolVar(&o.stdinExit, "stdin-exit", false, "also exit (closing the session) when stdin reaches EOF")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", 10*time.Second, "client: TCP connect timeout")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	usage := func(msg string) {
		fmt.Fprintf(os.Stderr, "yamux-peer: %s\n", msg)
		fs.Usage()
		os.Exit(2)
	}
	switch {
	case fs.NArg() != 0:
		usage("unexpected arguments: " + strings.Join(fs.Args(), " "))
	case o.mode != "server" && o.mode != "client":
		usage("-mode must be server or client")
	case o.mode == "client" && o.connect == "":
		usage("-mode client needs -connect HOST:PORT")
	case o.open < 0 || o.size < 0:
		usage("-open and -size must be >= 0")
	case o.window > 1<<32-1:
		usage("-window must fit in 32 bits")
	}
	return o
}

func main() {
	os.Exit(run(parseFlags()))
}

func run(o options) int {
	stats := &echoStats{}
	done := func() int {
		emit("DONE accepted=%d echoed_bytes=%d", stats.accepted.Load(), stats.echoed.Load())
		if failed.Load() {
			return 1
		}
		return 0
	}

	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = o.keepalive
	cfg.KeepAliveInterval = o.keepaliveInterval
	cfg.MaxStreamWindowSize = uint32(o.window)
	cfg.LogOutput = os.Stderr
	if err := yamux.VerifyConfig(cfg); err != nil {
		fail("config: %v", err)
		return done()
	}

	// stdin EOF watcher (only with -stdin-exit).
	stdinEOF := make(chan struct{})
	if o.stdinExit {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(stdinEOF)
		}()
	}

	var conn net.Conn
	var readyAddr string
	if o.mode == "server" {
		ln, err := net.Listen("tcp", o.listen)
		if err != nil {
			fail("listen %s: %v", o.listen, err)
			return done()
		}
		emit("READY %s", ln.Addr().String())
		type acc struct {
			c   net.Conn
			err error
		}
		ch := make(chan acc, 1)
		go func() {
			c, err := ln.Accept()
			ch <- acc{c, err}
		}()
		select {
		case a := <-ch:
			_ = ln.Close()
			if a.err != nil {
				fail("accept: %v", a.err)
				return done()
			}
			conn = a.c
			logf("accepted connection from %s", conn.RemoteAddr())
		case <-stdinEOF:
			_ = ln.Close()
			logf("stdin EOF before a connection arrived")
			return done()
		}
	} else {
		c, err := net.DialTimeout("tcp", o.connect, o.connectTimeout)
		if err != nil {
			fail("connect %s: %v", o.connect, err)
			return done()
		}
		conn = c
		readyAddr = c.LocalAddr().String()
	}

	var sess *yamux.Session
	var err error
	if o.mode == "server" {
		sess, err = yamux.Server(conn, cfg)
	} else {
		sess, err = yamux.Client(conn, cfg)
	}
	if err != nil {
		_ = conn.Close()
		fail("session: %v", err)
		return done()
	}
	if o.mode == "client" {
		emit("READY %s", readyAddr)
	}

	var localClose atomic.Bool
	var wg sync.WaitGroup

	// Accept loop: echo every stream. AcceptStream returns the session's exit error once it
	// has shut down, which tells a clean end (remote EOF, our own Close) from a failure.
	acceptDone := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				if sess.IsClosed() {
					acceptDone <- err
					return
				}
				fail("accept stream: %v", err)
				continue
			}
			stats.accepted.Add(1)
			emit("ACCEPT %d", st.StreamID())
			wg.Add(1)
			go func() {
				defer wg.Done()
				echo(sess, st, stats)
			}()
		}
	}()

	// Active work, in order: ping, opens, goaway.
	wg.Add(1)
	go func() {
		defer wg.Done()
		if o.ping {
			rtt, err := sess.Ping()
			if err != nil {
				fail("ping: %v", err)
				emit("PING-FAIL %v", err)
			} else {
				emit("PING-OK %d", rtt.Microseconds())
			}
		}
		if o.open > 0 {
			openAll(sess, o.open, o.seed, o.size, o.openTimeout)
		}
		if o.goaway {
			if err := sess.GoAway(); err != nil {
				fail("goaway: %v", err)
			} else {
				emit("GOAWAY-SENT")
			}
		}
	}()

	select {
	case <-sess.CloseChan():
	case <-stdinEOF:
		logf("stdin EOF: closing the session")
		localClose.Store(true)
		_ = sess.Close()
	}

	exitErr := <-acceptDone
	switch {
	case exitErr == nil:
	case errors.Is(exitErr, io.EOF):
		logf("session ended: remote closed the connection")
	case errors.Is(exitErr, yamux.ErrSessionShutdown) && localClose.Load():
		logf("session ended: closed locally")
	case errors.Is(exitErr, yamux.ErrSessionShutdown):
		fail("session: closed by yamux itself (see stderr)")
	default:
		fail("session: %v", exitErr)
	}
	wg.Wait()
	_ = conn.Close()
	return done()
}
