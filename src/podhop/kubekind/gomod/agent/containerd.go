// The containerd side: checkpoint images written into the content store and
// unpacked for the CRI's snapshotter, image removal, and task pause/resume/kill.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const checkpointAnnotation = "org.criu.checkpoint.container.name"

type agent struct {
	cfg      *config
	ctr      *containerd.Client
	receives *receives
	tokenMu  sync.Mutex
}

func newAgent(cfg *config) (*agent, error) {
	var cli *containerd.Client
	var err error
	for deadline := time.Now().Add(60 * time.Second); ; {
		cli, err = containerd.New(cfg.socket, containerd.WithDefaultNamespace(cfg.namespace), containerd.WithTimeout(10*time.Second))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connecting to containerd at %s: %w", cfg.socket, err)
		}
		time.Sleep(time.Second)
	}
	if info, err := os.Stat(cfg.checkpoints); err != nil || !info.IsDir() {
		return nil, fmt.Errorf("checkpoint directory %s is missing", cfg.checkpoints)
	}
	if err := os.MkdirAll(cfg.workDir, 0o700); err != nil {
		return nil, err
	}
	return &agent{cfg: cfg, ctr: cli, receives: newReceives()}, nil
}

func (a *agent) ctx(parent context.Context) context.Context {
	return namespaces.WithNamespace(parent, a.cfg.namespace)
}

var containerID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func (a *agent) task(w http.ResponseWriter, r *http.Request) (any, error) {
	id, action := r.PathValue("id"), r.PathValue("action")
	if !containerID.MatchString(id) {
		return nil, fail(http.StatusBadRequest, "%q is not a container id", id)
	}
	ctx := a.ctx(r.Context())
	c, err := a.ctr.LoadContainer(ctx, id)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fail(http.StatusNotFound, "container %s not found", id)
		}
		return nil, err
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fail(http.StatusNotFound, "container %s has no task", id)
		}
		return nil, err
	}
	switch action {
	case "pause":
		err = t.Pause(ctx)
	case "resume":
		err = t.Resume(ctx)
	case "kill": // a frozen task gets the signal once thawed: thaw it right after, it never runs again
		before, _ := t.Status(ctx)
		err = t.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll)
		if err == nil && before.Status == containerd.Paused {
			_ = t.Resume(ctx)
		}
	default:
		return nil, fail(http.StatusNotFound, "unknown task action %q (pause, resume, kill)", action)
	}
	if err != nil {
		return nil, fail(http.StatusConflict, "%s %s: %v", action, id, err)
	}
	status, err := t.Status(ctx)
	if err != nil {
		return map[string]string{"id": id, "action": action}, nil
	}
	return map[string]string{"id": id, "action": action, "status": string(status.Status)}, nil
}

// imageRef accepts a tagged, fully named reference (what the migration asks for).
func imageRef(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fail(http.StatusBadRequest, "image %q: %v", ref, err)
	}
	if _, ok := named.(reference.Tagged); !ok {
		return "", fail(http.StatusBadRequest, "image %q has no tag", ref)
	}
	return named.String(), nil
}

func (a *agent) deleteImage(w http.ResponseWriter, r *http.Request) (any, error) {
	ref, err := imageRef(r.PathValue("ref"))
	if err != nil {
		return nil, err
	}
	ctx := a.ctx(r.Context())
	if err := a.removeImage(ctx, ref); err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fail(http.StatusNotFound, "image %s not found", ref)
		}
		return nil, err
	}
	return map[string]string{"deleted": ref}, nil
}

// importCheckpoint stores the layer file (already validated and rewritten) as a one-layer image
// whose manifest carries the checkpoint annotation, names it ref, and unpacks it for the CRI.
func (a *agent) importCheckpoint(parent context.Context, ref, container, layerPath string, layerDigest digest.Digest, layerSize int64) error {
	ctx, done, err := a.ctr.WithLease(a.ctx(parent))
	if err != nil {
		return err
	}
	defer done(context.WithoutCancel(ctx))
	cs := a.ctr.ContentStore()
	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: layerDigest, Size: layerSize}
	f, err := os.Open(layerPath)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := content.WriteBlob(ctx, cs, "podhop-layer-"+layerDigest.Encoded(), f, layer); err != nil {
		return fmt.Errorf("writing the layer: %w", err)
	}
	created := time.Now().UTC()
	cfg := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layerDigest}},
		History:  []ocispec.History{{Created: &created, CreatedBy: "podhop-agent"}},
	}
	cfgDesc, err := putJSON(ctx, cs, ocispec.MediaTypeImageConfig, cfg, nil)
	if err != nil {
		return err
	}
	manifest := ocispec.Manifest{
		MediaType:   ocispec.MediaTypeImageManifest,
		Config:      cfgDesc,
		Layers:      []ocispec.Descriptor{layer},
		Annotations: map[string]string{checkpointAnnotation: container},
	}
	manifest.SchemaVersion = 2
	gc := map[string]string{
		"containerd.io/gc.ref.content.config": cfgDesc.Digest.String(),
		"containerd.io/gc.ref.content.l.0":    layerDigest.String(),
	}
	manDesc, err := putJSON(ctx, cs, ocispec.MediaTypeImageManifest, manifest, gc)
	if err != nil {
		return err
	}
	// The CRI looks an image up by its reference and then by its ID (the config digest) as an image
	// name of its own, as its pulls record them: both names point at the manifest.
	labels := map[string]string{"io.cri-containerd.image": "managed", "podhop.io/checkpoint": container}
	is := a.ctr.ImageService()
	for _, name := range []string{cfgDesc.Digest.String(), ref} {
		img := images.Image{Name: name, Target: manDesc, Labels: labels}
		if _, err := is.Create(ctx, img); err != nil {
			if !errdefs.IsAlreadyExists(err) {
				return fmt.Errorf("creating image %s: %w", name, err)
			}
			if _, err := is.Update(ctx, img); err != nil {
				return fmt.Errorf("updating image %s: %w", name, err)
			}
		}
	}
	img := images.Image{Name: ref, Target: manDesc, Labels: labels}
	if err := containerd.NewImage(a.ctr, img).Unpack(ctx, a.cfg.snapshotter); err != nil {
		_ = a.removeImage(context.WithoutCancel(ctx), ref)
		return fmt.Errorf("unpacking %s for %s: %w", ref, a.cfg.snapshotter, err)
	}
	return nil
}

// removeImage deletes ref and the image named by its config digest (see importCheckpoint), the
// latter only if it is one of podhop's checkpoint images.
func (a *agent) removeImage(ctx context.Context, ref string) error {
	is := a.ctr.ImageService()
	img, err := is.Get(ctx, ref)
	if err != nil {
		return err
	}
	if cfg, err := containerd.NewImage(a.ctr, img).Config(ctx); err == nil {
		if byID, err := is.Get(ctx, cfg.Digest.String()); err == nil && byID.Labels["podhop.io/checkpoint"] != "" {
			_ = is.Delete(ctx, byID.Name)
		}
	}
	return is.Delete(ctx, ref, images.SynchronousDelete())
}

func putJSON(ctx context.Context, cs content.Store, mediaType string, v any, labels map[string]string) (ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	var opts []content.Opt
	if labels != nil {
		opts = append(opts, content.WithLabels(labels))
	}
	if err := content.WriteBlob(ctx, cs, "podhop-"+desc.Digest.Encoded(), bytes.NewReader(data), desc, opts...); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("writing %s: %w", mediaType, err)
	}
	return desc, nil
}
