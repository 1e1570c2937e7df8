// Command podhop-agent is podhop's node agent: a small HTTP server, one per
// node (a hostNetwork DaemonSet), that does on its node what the Kubernetes
// API cannot: it reads the kubelet's checkpoint archives, streams one to the
// target node's agent, turns a received archive into a checkpoint image in the
// node's containerd (restore-via-create reads it), and pauses, resumes or kills
// a container's task for a cold migration. It also tells `podhop doctor` what its node's runtime can
// do (runtime.go), and `podhop-agent --idle` is the doctor's throwaway container to checkpoint.
//
// Why each guard: podhop reaches the agent through the API server's pod proxy,
// so every request must carry the token of the Secret podhop-system/podhop-agent
// (compared in constant time). Archives crossing between agents are untrusted:
// a receive accepts one connection, only from the source node's address, only
// if it opens with the migration's secret, and the archive must hold nothing
// but plain files and directories with relative names. Checkpoint files are
// opened with O_NOFOLLOW and must be regular files in the checkpoint directory.
package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type config struct {
	listen      string
	nodeName    string
	nodeIP      string
	token       []byte
	tokenFile   string
	socket      string
	checkpoints string
	snapshotter string
	namespace   string
	workDir     string
	maxArchiveB int64
}

// expand fills "{node}" in a path template with the node's name (the kind runs several nodes on one
// host, each with its own containerd socket and kubelet root).
func expand(tmpl, node string) string { return strings.ReplaceAll(tmpl, "{node}", node) }

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func parseConfig() (*config, error) {
	c := &config{}
	tokenFile := flag.String("token-file", env("PODHOP_TOKEN_FILE", "/etc/podhop-agent/token"), "file holding the API token")
	flag.StringVar(&c.listen, "port", env("PODHOP_AGENT_PORT", "10290"), "TCP port of the HTTP API")
	flag.StringVar(&c.nodeName, "node-name", env("NODE_NAME", ""), "this node's name (downward API)")
	flag.StringVar(&c.nodeIP, "node-ip", env("NODE_IP", ""), "this node's address (downward API status.hostIP)")
	flag.StringVar(&c.socket, "containerd-socket", env("PODHOP_CONTAINERD_SOCKET", "/run/containerd/containerd.sock"), "containerd's socket ({node} = node name)")
	flag.StringVar(&c.checkpoints, "checkpoint-dir", env("PODHOP_CHECKPOINT_DIR", "/var/lib/kubelet/checkpoints"), "the kubelet's checkpoint directory ({node} = node name)")
	flag.StringVar(&c.snapshotter, "snapshotter", env("PODHOP_SNAPSHOTTER", "overlayfs"), "the CRI's snapshotter")
	flag.StringVar(&c.namespace, "namespace", env("PODHOP_CONTAINERD_NAMESPACE", "k8s.io"), "containerd namespace of the CRI")
	flag.StringVar(&c.workDir, "work-dir", env("PODHOP_WORK_DIR", os.TempDir()), "where received archives are staged")
	flag.Int64Var(&c.maxArchiveB, "max-archive-bytes", 8<<30, "largest archive a receive accepts")
	probe := flag.Bool("probe", false, "check that the agent on this node answers (for an exec probe), then exit")
	flag.Parse()
	tok, err := os.ReadFile(*tokenFile)
	if err != nil {
		return nil, fmt.Errorf("reading the token: %w", err)
	}
	c.tokenFile = *tokenFile
	c.token = []byte(strings.TrimSpace(string(tok)))
	if len(c.token) < 16 {
		return nil, errors.New("the token is shorter than 16 characters")
	}
	if c.nodeIP == "" {
		return nil, errors.New("NODE_IP (or --node-ip) is required")
	}
	if net.ParseIP(c.nodeIP) == nil {
		return nil, fmt.Errorf("NODE_IP %q is not an address", c.nodeIP)
	}
	c.socket = expand(c.socket, c.nodeName)
	c.checkpoints = expand(c.checkpoints, c.nodeName)
	if *probe {
		os.Exit(runProbe(c))
	}
	return c, nil
}

func runProbe(c *config) int {
	req, _ := http.NewRequest("GET", "http://"+net.JoinHostPort(c.nodeIP, c.listen)+"/healthz", nil)
	req.Header.Set("X-Podhop-Token", string(c.token))
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "healthz:", resp.Status)
		return 1
	}
	return 0
}

// ---------------------------------------------------------------------------- HTTP plumbing

type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func fail(status int, format string, args ...any) error {
	return &httpError{status, fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type handler func(w http.ResponseWriter, r *http.Request) (any, error)

// authed wraps a handler: the token first (constant time), then JSON out, errors as {"error": ...}.
func (a *agent) authed(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.tokenOK([]byte(r.Header.Get("X-Podhop-Token"))) {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong X-Podhop-Token"})
			return
		}
		out, err := h(w, r)
		if err != nil {
			status := http.StatusInternalServerError
			var he *httpError
			if errors.As(err, &he) {
				status = he.status
			}
			log.Printf("%s %s: %d %v", r.Method, r.URL.Path, status, err)
			writeJSON(w, status, map[string]string{"error": err.Error()})
			return
		}
		if out != nil {
			writeJSON(w, http.StatusOK, out)
		}
	}
}

// tokenOK compares in constant time; on a mismatch it re-reads the mounted Secret once, so a rotated
// token is honoured without a restart (the kubelet updates the file in place).
func (a *agent) tokenOK(got []byte) bool {
	a.tokenMu.Lock()
	defer a.tokenMu.Unlock()
	if subtle.ConstantTimeCompare(got, a.cfg.token) == 1 {
		return true
	}
	if len(got) == 0 {
		return false
	}
	if tok, err := os.ReadFile(a.cfg.tokenFile); err == nil {
		if t := []byte(strings.TrimSpace(string(tok))); len(t) >= 16 {
			a.cfg.token = t
		}
	}
	return subtle.ConstantTimeCompare(got, a.cfg.token) == 1
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fail(http.StatusBadRequest, "bad request body: %v", err)
	}
	return nil
}

// plainName refuses anything but a plain file name: no separators, no "..", no NUL.
func plainName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 255 ||
		strings.ContainsAny(name, "/\x00") || filepath.Base(name) != name {
		return fail(http.StatusBadRequest, "%q is not a plain file name", name)
	}
	return nil
}

// openCheckpoint opens <checkpoint dir>/<name> without following a link; it must be a regular file.
func (a *agent) openCheckpoint(name string) (*os.File, os.FileInfo, error) {
	if err := plainName(name); err != nil {
		return nil, nil, err
	}
	path := filepath.Join(a.cfg.checkpoints, name)
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil, nil, fail(http.StatusNotFound, "checkpoint %s not found", name)
		}
		if errors.Is(err, syscall.ELOOP) {
			return nil, nil, fail(http.StatusForbidden, "checkpoint %s is a symbolic link", name)
		}
		return nil, nil, fail(http.StatusInternalServerError, "opening %s: %v", name, err)
	}
	f := os.NewFile(uintptr(fd), path)
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, fail(http.StatusForbidden, "checkpoint %s is not a regular file", name)
	}
	return f, info, nil
}

// ---------------------------------------------------------------------------- endpoints

func (a *agent) healthz(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	version, err := a.ctr.Version(ctx)
	if err != nil {
		return nil, fail(http.StatusServiceUnavailable, "containerd at %s: %v", a.cfg.socket, err)
	}
	if info, err := os.Stat(a.cfg.checkpoints); err != nil || !info.IsDir() {
		return nil, fail(http.StatusServiceUnavailable, "checkpoint directory %s is missing", a.cfg.checkpoints)
	}
	return map[string]string{"node": a.cfg.nodeName, "containerd": version.Version, "status": "ok"}, nil
}

func (a *agent) getCheckpoint(w http.ResponseWriter, r *http.Request) (any, error) {
	f, info, err := a.openCheckpoint(r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", fmt.Sprint(info.Size()))
	w.WriteHeader(http.StatusOK)
	if _, err := copyFile(w, f); err != nil {
		log.Printf("streaming %s: %v", info.Name(), err)
	}
	return nil, nil
}

func (a *agent) deleteCheckpoint(w http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	f, _, err := a.openCheckpoint(name) // the same checks before the unlink
	if err != nil {
		return nil, err
	}
	f.Close()
	if err := os.Remove(filepath.Join(a.cfg.checkpoints, name)); err != nil {
		return nil, fail(http.StatusInternalServerError, "removing %s: %v", name, err)
	}
	return map[string]string{"deleted": name}, nil
}

func main() {
	if isIdle() {
		idle()
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	cfg, err := parseConfig()
	if err != nil {
		log.Fatalf("podhop-agent: %v", err)
	}
	a, err := newAgent(cfg)
	if err != nil {
		log.Fatalf("podhop-agent: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.authed(a.healthz))
	mux.HandleFunc("GET /checkpoints/{name}", a.authed(a.getCheckpoint))
	mux.HandleFunc("DELETE /checkpoints/{name}", a.authed(a.deleteCheckpoint))
	mux.HandleFunc("GET /checkpoints/{name}/criu", a.authed(a.checkpointCRIU))
	mux.HandleFunc("GET /runtime", a.authed(a.runtimeInfo))
	mux.HandleFunc("POST /receive", a.authed(a.startReceive))
	mux.HandleFunc("GET /receive/{id}", a.authed(a.receiveStatus))
	mux.HandleFunc("DELETE /receive/{id}", a.authed(a.cancelReceive))
	mux.HandleFunc("POST /send", a.authed(a.send))
	mux.HandleFunc("DELETE /images/{ref...}", a.authed(a.deleteImage))
	mux.HandleFunc("POST /tasks/{id}/{action}", a.authed(a.task))
	mux.HandleFunc("/", a.authed(func(w http.ResponseWriter, r *http.Request) (any, error) {
		return nil, fail(http.StatusNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path)
	}))
	addr := net.JoinHostPort(cfg.nodeIP, cfg.listen)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("podhop-agent on %s (node %s): containerd %s, checkpoints %s", addr, cfg.nodeName, cfg.socket, cfg.checkpoints)
	log.Fatal(srv.ListenAndServe())
}
