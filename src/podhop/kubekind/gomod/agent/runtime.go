// What `podhop doctor --kubeconfig` asks a node: can its runtime restore a checkpoint image, and which
// CRIU does it dump with. Both answers come through what the agent already holds — containerd's
// socket and the kubelet's checkpoint directory — so no new mount, capability or API access:
//
//   - GET /runtime: containerd's version and its CRI plugin's own view of its configuration (the CRI
//     Status call with verbose=true, on the same socket): enable_experimental_restore_via_create and
//     enable_criu, as containerd parsed them, not as some file on the host says.
//   - GET /checkpoints/{name}/criu: the CRIU version in an archive's dump.log (CRIU's log of that
//     dump, which the CRI puts in every archive). The CRIU that counts is the one containerd's runc
//     found when it dumped; the agent's container cannot run the host's binaries, and needs not.
package main

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path"
	"regexp"
	"syscall"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criSettings are the CRI plugin's settings the doctor judges; a nil field is one this containerd's
// CRI does not have (containerd 2.1 and 2.2 restore without a setting; 2.4 has none).
type criSettings struct {
	RestoreViaCreate *bool `json:"enableExperimentalRestoreViaCreate"`
	EnableCRIU       *bool `json:"enableCRIU"`
}

func (a *agent) runtimeInfo(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	version, err := a.ctr.Version(ctx)
	if err != nil {
		return nil, fail(http.StatusServiceUnavailable, "containerd at %s: %v", a.cfg.socket, err)
	}
	out := map[string]any{"node": a.cfg.nodeName, "containerd": version.Version, "revision": version.Revision}
	settings, err := a.criSettings(ctx)
	if err != nil {
		out["criError"] = err.Error()
	} else {
		out["cri"] = settings
	}
	return out, nil
}

func (a *agent) criSettings(ctx context.Context) (*criSettings, error) {
	conn, ok := a.ctr.Conn().(grpc.ClientConnInterface)
	if !ok {
		return nil, errors.New("containerd's connection is not gRPC")
	}
	resp, err := runtimeapi.NewRuntimeServiceClient(conn).Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		return nil, fmt.Errorf("CRI status: %w", err)
	}
	return parseCRIConfig(resp.GetInfo()["config"])
}

// parseCRIConfig reads the settings out of the CRI's verbose status ("config": its config as JSON).
func parseCRIConfig(raw string) (*criSettings, error) {
	if raw == "" {
		return nil, errors.New("the CRI status has no config (not containerd's CRI?)")
	}
	var s criSettings
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return nil, fmt.Errorf("the CRI's config: %w", err)
	}
	return &s, nil
}

func (a *agent) checkpointCRIU(w http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	f, _, err := a.openCheckpoint(name) // the same guards as a download: plain name, no link, regular
	if err != nil {
		return nil, err
	}
	defer f.Close()
	version, line, err := criuVersion(f)
	if err != nil {
		return nil, fail(http.StatusUnprocessableEntity, "%s: %v", name, err)
	}
	return map[string]string{"checkpoint": name, "criu": version, "line": line}, nil
}

var criuVersionLine = regexp.MustCompile(`Version: ([0-9][0-9A-Za-z.+~-]*)`)

// criuVersion finds dump.log in a plain tar archive and the version CRIU logged at its start.
func criuVersion(archive io.Reader) (version, line string, err error) {
	tr := tar.NewReader(archive)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return "", "", errors.New("no dump.log in the archive")
		}
		if err != nil {
			return "", "", fmt.Errorf("not a plain tar archive: %w", err)
		}
		if h.Typeflag != tar.TypeReg || path.Clean(h.Name) != "dump.log" {
			continue
		}
		sc := bufio.NewScanner(io.LimitReader(tr, 1<<20))
		sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
		for n := 0; sc.Scan() && n < 200; n++ { // CRIU logs its version among its first lines
			if m := criuVersionLine.FindStringSubmatch(sc.Text()); m != nil {
				return m[1], sc.Text(), nil
			}
		}
		return "", "", errors.New("dump.log names no CRIU version")
	}
}

// idle is the doctor's throwaway container: a process that only waits, for the kubelet to checkpoint.
func idle() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	os.Exit(0)
}

// isIdle says whether the agent was started as the throwaway container (before any configuration:
// that container has no token, no node address and no socket).
func isIdle() bool {
	return len(os.Args) == 2 && os.Args[1] == "--idle"
}
