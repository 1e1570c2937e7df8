// Moving archives between agents: a receive opens a one-shot listener for
// one peer and one secret, checks the archive as untrusted input, and makes it
// a checkpoint image; a send streams a checkpoint file to such a listener.
package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
)

const (
	maxEntries   = 200000
	keepStatus   = time.Hour
	maxReceives  = 256
	secretMinLen = 16
)

type receiveStatus struct {
	State string `json:"state"`
	Bytes int64  `json:"bytes"`
	Error string `json:"error,omitempty"`
}

type receive struct {
	mu        sync.Mutex
	status    receiveStatus
	ended     time.Time
	closers   []io.Closer // the listener, then the connection: closed by a cancel
	cancelled bool
}

// track registers something a cancel must close; false if the receive was already cancelled.
func (r *receive) track(c io.Closer) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancelled {
		c.Close()
		return false
	}
	r.closers = append(r.closers, c)
	return true
}

func (r *receive) cancel() receiveStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status.State != "done" && r.status.State != "failed" {
		r.cancelled = true
		for _, c := range r.closers {
			c.Close()
		}
	}
	return r.status
}

func (r *receive) isCancelled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cancelled
}

func (r *receive) set(state string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.State = state
	if err != nil {
		r.status.Error = err.Error()
	}
	if state == "done" || state == "failed" {
		r.ended = time.Now()
	}
}

func (r *receive) add(n int64) {
	r.mu.Lock()
	r.status.Bytes += n
	r.mu.Unlock()
}

func (r *receive) get() receiveStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

type receives struct {
	mu sync.Mutex
	m  map[string]*receive
}

func newReceives() *receives { return &receives{m: map[string]*receive{}} }

func (rs *receives) add() (string, *receive, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for id, r := range rs.m {
		r.mu.Lock()
		old := !r.ended.IsZero() && time.Since(r.ended) > keepStatus
		r.mu.Unlock()
		if old {
			delete(rs.m, id)
		}
	}
	if len(rs.m) >= maxReceives {
		return "", nil, fail(http.StatusTooManyRequests, "too many receives in progress")
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", nil, err
	}
	id := hex.EncodeToString(b)
	r := &receive{status: receiveStatus{State: "waiting"}}
	rs.m[id] = r
	return id, r, nil
}

func (rs *receives) get(id string) *receive {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.m[id]
}

var containerName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

type receiveRequest struct {
	From      string `json:"from"`
	Secret    string `json:"secret"`
	Container string `json:"container"`
	Image     string `json:"image"`
	TimeoutS  int    `json:"timeout_s"`
}

func decodeSecret(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) < secretMinLen {
		return nil, fail(http.StatusBadRequest, "the secret must be at least %d bytes in hex", secretMinLen)
	}
	return b, nil
}

func (a *agent) startReceive(w http.ResponseWriter, r *http.Request) (any, error) {
	var req receiveRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	from := net.ParseIP(req.From)
	if from == nil {
		return nil, fail(http.StatusBadRequest, "from %q is not an address", req.From)
	}
	secret, err := decodeSecret(req.Secret)
	if err != nil {
		return nil, err
	}
	if !containerName.MatchString(req.Container) {
		return nil, fail(http.StatusBadRequest, "%q is not a container name", req.Container)
	}
	ref, err := imageRef(req.Image)
	if err != nil {
		return nil, err
	}
	if req.TimeoutS < 1 || req.TimeoutS > 3600 {
		return nil, fail(http.StatusBadRequest, "timeout_s must be between 1 and 3600")
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(a.cfg.nodeIP, "0"))
	if err != nil {
		return nil, fail(http.StatusInternalServerError, "listening on %s: %v", a.cfg.nodeIP, err)
	}
	id, rec, err := a.receives.add()
	if err != nil {
		ln.Close()
		return nil, err
	}
	timeout := time.Duration(req.TimeoutS) * time.Second
	rec.track(ln)
	go a.runReceive(id, rec, ln.(*net.TCPListener), from, secret, req.Container, ref, timeout)
	return map[string]any{"id": id, "port": ln.Addr().(*net.TCPAddr).Port}, nil
}

// cancelReceive closes a receive's listener (and its connection, if one is open): the migration
// that asked for it has given up. A finished receive is left as it is (its image is the caller's).
func (a *agent) cancelReceive(w http.ResponseWriter, r *http.Request) (any, error) {
	rec := a.receives.get(r.PathValue("id"))
	if rec == nil {
		return nil, fail(http.StatusNotFound, "no receive %q", r.PathValue("id"))
	}
	return rec.cancel(), nil
}

func (a *agent) receiveStatus(w http.ResponseWriter, r *http.Request) (any, error) {
	rec := a.receives.get(r.PathValue("id"))
	if rec == nil {
		return nil, fail(http.StatusNotFound, "no receive %q", r.PathValue("id"))
	}
	return rec.get(), nil
}

// accept waits for the one connection from `from` that opens with the secret; others are dropped.
func accept(ln *net.TCPListener, from net.IP, secret []byte, deadline time.Time) (net.Conn, error) {
	defer ln.Close() // one connection only: nobody else gets in afterwards
	if err := ln.SetDeadline(deadline); err != nil {
		return nil, err
	}
	for {
		conn, err := ln.AcceptTCP()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, fmt.Errorf("no connection from %s within the timeout", from)
			}
			return nil, err
		}
		peer := conn.RemoteAddr().(*net.TCPAddr).IP
		if !peer.Equal(from) {
			log.Printf("receive: dropped a connection from %s (expected %s)", peer, from)
			conn.Close()
			continue
		}
		got := make([]byte, len(secret))
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(conn, got); err != nil || subtle.ConstantTimeCompare(got, secret) != 1 {
			log.Printf("receive: dropped a connection from %s without the secret", peer)
			conn.Close()
			continue
		}
		_ = conn.SetReadDeadline(deadline)
		return conn, nil
	}
}

func (a *agent) runReceive(id string, rec *receive, ln *net.TCPListener, from net.IP, secret []byte, container, ref string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	err := func() error {
		conn, err := accept(ln, from, secret, deadline)
		if err != nil {
			if rec.isCancelled() {
				return errors.New("cancelled")
			}
			return err
		}
		defer conn.Close()
		if !rec.track(conn) {
			return errors.New("cancelled")
		}
		rec.set("receiving", nil)
		dir, err := os.MkdirTemp(a.cfg.workDir, "receive-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if err := os.Chmod(dir, 0o700); err != nil {
			return err
		}
		archive := filepath.Join(dir, "archive")
		if err := a.store(conn, archive, rec); err != nil {
			return err
		}
		_, _ = conn.Write([]byte{0}) // received: the sender may finish
		rec.set("importing", nil)
		layer := filepath.Join(dir, "layer.tar")
		dgst, size, err := checkpointLayer(archive, layer)
		if err != nil {
			return fmt.Errorf("the archive was refused: %w", err)
		}
		_ = os.Remove(archive)
		if rec.isCancelled() {
			return errors.New("cancelled")
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(2*time.Minute))
		defer cancel()
		if err := a.importCheckpoint(ctx, ref, container, layer, dgst, size); err != nil {
			return err
		}
		if rec.isCancelled() { // cancelled while importing: nobody will use or remove the image
			_ = a.removeImage(a.ctx(ctx), ref)
			return errors.New("cancelled")
		}
		return nil
	}()
	if err != nil {
		log.Printf("receive %s: %v", id, err)
		rec.set("failed", err)
		return
	}
	log.Printf("receive %s: %s imported (%d bytes)", id, ref, rec.get().Bytes)
	rec.set("done", nil)
}

func (a *agent) store(conn net.Conn, file string, rec *receive) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			total += int64(n)
			if total > a.cfg.maxArchiveB {
				return fmt.Errorf("the archive is larger than %d bytes", a.cfg.maxArchiveB)
			}
			if _, werr := f.Write(buf[:n]); werr != nil {
				return werr
			}
			rec.add(int64(n))
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("receiving: %w", err)
		}
	}
	return f.Sync()
}

// safeName returns an archive member's name made relative ("./x" -> "x"), or an error for an
// absolute name or one with a ".." component.
func safeName(name string) (string, error) {
	if strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("member %q has an absolute or invalid name", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("member %q leaves the archive", name)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// checkpointLayer reads the (untrusted) archive once and writes a layer holding its files and
// directories at "/": nothing else is allowed (containerd refuses links and devices on restore
// anyway), and owners, modes and extended headers are podhop's, not the archive's.
func checkpointLayer(archive, layer string) (digest.Digest, int64, error) {
	in, err := os.Open(archive)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	br := bufio.NewReaderSize(in, 1<<16)
	var src io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return "", 0, err
		}
		defer gz.Close()
		src = gz
	}
	out, err := os.OpenFile(layer, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", 0, err
	}
	defer out.Close()
	h := sha256.New()
	counter := &countWriter{}
	tw := tar.NewWriter(io.MultiWriter(out, h, counter))
	tr := tar.NewReader(src)
	seen := map[string]bool{}
	entries := 0
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", 0, fmt.Errorf("not a tar archive: %w", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		if entries++; entries > maxEntries {
			return "", 0, fmt.Errorf("more than %d members", maxEntries)
		}
		name, err := safeName(hdr.Name)
		if err != nil {
			return "", 0, err
		}
		if name == "" {
			continue
		}
		if seen[name] {
			return "", 0, fmt.Errorf("member %q appears twice", name)
		}
		seen[name] = true
		out := &tar.Header{Name: name, ModTime: hdr.ModTime, Format: tar.FormatPAX}
		switch hdr.Typeflag {
		case tar.TypeDir:
			out.Typeflag, out.Mode = tar.TypeDir, 0o700
			out.Name += "/"
		case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archives use TypeRegA
			out.Typeflag, out.Mode, out.Size = tar.TypeReg, int64(hdr.FileInfo().Mode().Perm()&0o755|0o600), hdr.Size
		default:
			return "", 0, fmt.Errorf("member %q is not a regular file or directory (type %q)", name, hdr.Typeflag)
		}
		if err := tw.WriteHeader(out); err != nil {
			return "", 0, err
		}
		if out.Typeflag == tar.TypeReg {
			if _, err := io.CopyN(tw, tr, hdr.Size); err != nil {
				return "", 0, fmt.Errorf("reading %q: %w", name, err)
			}
		}
	}
	if len(seen) == 0 {
		return "", 0, errors.New("the archive is empty")
	}
	if err := tw.Close(); err != nil {
		return "", 0, err
	}
	if err := out.Sync(); err != nil {
		return "", 0, err
	}
	return digest.NewDigest(digest.SHA256, h), counter.n, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

type sendRequest struct {
	Archive string `json:"archive"`
	Peer    string `json:"peer"`
	Secret  string `json:"secret"`
}

func (a *agent) send(w http.ResponseWriter, r *http.Request) (any, error) {
	var req sendRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	secret, err := decodeSecret(req.Secret)
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(req.Peer)
	if err != nil || net.ParseIP(host) == nil || port == "" {
		return nil, fail(http.StatusBadRequest, "peer %q is not ip:port", req.Peer)
	}
	f, _, err := a.openCheckpoint(req.Archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(r.Context(), "tcp", req.Peer)
	if err != nil {
		return nil, fail(http.StatusBadGateway, "connecting to %s: %v", req.Peer, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(r.Context(), func() { conn.Close() }) // the caller gave up: so do we
	defer stop()
	if _, err := conn.Write(secret); err != nil {
		return nil, fail(http.StatusBadGateway, "sending to %s: %v", req.Peer, err)
	}
	n, err := copyFile(conn, f)
	if err != nil {
		return nil, fail(http.StatusBadGateway, "sending to %s after %d bytes: %v", req.Peer, n, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Minute))
	ack := make([]byte, 1)
	if _, err := io.ReadFull(conn, ack); err != nil || ack[0] != 0 {
		return nil, fail(http.StatusBadGateway, "%s did not confirm the archive (%v)", req.Peer, err)
	}
	return map[string]int64{"bytes": n}, nil
}

func copyFile(w io.Writer, f *os.File) (int64, error) {
	return io.CopyBuffer(w, f, make([]byte, 1<<20))
}
