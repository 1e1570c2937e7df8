package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlainName(t *testing.T) {
	for _, ok := range []string{"checkpoint-redis_default-redis-2026-12-01T21:16:16Z.tar", "a.tar"} {
		if err := plainName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", "/etc/passwd", "x\x00y", strings.Repeat("a", 256)} {
		if err := plainName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSafeName(t *testing.T) {
	cases := map[string]string{"./config.dump": "config.dump", "checkpoint/": "checkpoint", "a/./b": "a/b", "./": ""}
	for in, want := range cases {
		got, err := safeName(in)
		if err != nil || got != want {
			t.Errorf("safeName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"/etc/x", "../x", "a/../../x", "a/..", "x\x00"} {
		if _, err := safeName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

type member struct {
	name string
	typ  byte
	mode int64
	data string
}

func archive(t *testing.T, members ...member) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := &tar.Header{Name: m.name, Typeflag: m.typ, Mode: m.mode, Size: int64(len(m.data)), Uid: 1000, Linkname: "/etc/shadow"}
		if m.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if m.typ == tar.TypeReg {
			tw.Write([]byte(m.data))
		}
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "archive")
	os.WriteFile(p, buf.Bytes(), 0o600)
	return p
}

func TestCheckpointLayerKeepsFilesAndDirsOnly(t *testing.T) {
	src := archive(t,
		member{"checkpoint/", tar.TypeDir, 0o755, ""},
		member{"checkpoint/pages-1.img", tar.TypeReg, 0o4755, "pages"},
		member{"./config.dump", tar.TypeReg, 0o644, "{}"},
	)
	out := filepath.Join(t.TempDir(), "layer")
	dgst, size, err := checkpointLayer(src, out)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(out)
	if int64(len(data)) != size || !strings.HasPrefix(dgst.String(), "sha256:") || dgst.Validate() != nil {
		t.Fatalf("size %d/%d digest %s", len(data), size, dgst)
	}
	tr := tar.NewReader(bytes.NewReader(data))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Mode&0o7000 != 0 {
			t.Errorf("%s: uid %d mode %o (owner and set-id bits must go)", h.Name, h.Uid, h.Mode)
		}
	}
	if strings.Join(names, ",") != "checkpoint/,checkpoint/pages-1.img,config.dump" {
		t.Errorf("members %v", names)
	}
}

func TestCheckpointLayerRefusesUntrustedMembers(t *testing.T) {
	for why, m := range map[string]member{
		"symlink":  {"checkpoint/x", tar.TypeSymlink, 0o777, ""},
		"hardlink": {"checkpoint/x", tar.TypeLink, 0o644, ""},
		"device":   {"dev", tar.TypeChar, 0o644, ""},
		"fifo":     {"fifo", tar.TypeFifo, 0o644, ""},
		"dotdot":   {"checkpoint/../../x", tar.TypeReg, 0o644, "x"},
		"absolute": {"/etc/cron.d/x", tar.TypeReg, 0o644, "x"},
	} {
		src := archive(t, member{"config.dump", tar.TypeReg, 0o644, "{}"}, m)
		if _, _, err := checkpointLayer(src, filepath.Join(t.TempDir(), "layer")); err == nil {
			t.Errorf("%s accepted", why)
		}
	}
	dup := archive(t, member{"a", tar.TypeReg, 0o644, "1"}, member{"./a", tar.TypeReg, 0o644, "2"})
	if _, _, err := checkpointLayer(dup, filepath.Join(t.TempDir(), "layer")); err == nil {
		t.Error("a duplicate member was accepted")
	}
}

func tarOf(t *testing.T, files map[string]string) *bytes.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, data := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(data))
	}
	tw.Close()
	return bytes.NewReader(buf.Bytes())
}

func TestCRIUVersionFromDumpLog(t *testing.T) {
	log := "(00.000000) Parsing config file /etc/criu/runc.conf\n(00.000038) Version: 4.2.1 (gitid 0)\n(00.000042) Running on vm Linux 6.18\n"
	v, line, err := criuVersion(tarOf(t, map[string]string{"checkpoint/inventory.img": "x", "./dump.log": log}))
	if err != nil || v != "4.2.1" || !strings.Contains(line, "gitid 0") {
		t.Fatalf("got %q %q %v", v, line, err)
	}
	if _, _, err := criuVersion(tarOf(t, map[string]string{"config.dump": "{}"})); err == nil || !strings.Contains(err.Error(), "no dump.log") {
		t.Errorf("an archive without dump.log: %v", err)
	}
	if _, _, err := criuVersion(tarOf(t, map[string]string{"dump.log": "(00.0) Error (criu/cr-dump.c:1): nothing\n"})); err == nil {
		t.Error("a dump.log without a version was accepted")
	}
	if _, _, err := criuVersion(strings.NewReader("not a tar archive at all, just text that is long enough to be read as a header block...")); err == nil {
		t.Error("a non-tar input was accepted")
	}
}

func TestParseCRIConfig(t *testing.T) {
	s, err := parseCRIConfig(`{"enableExperimentalRestoreViaCreate":true,"enableCRIU":null,"other":1}`)
	if err != nil || s.RestoreViaCreate == nil || !*s.RestoreViaCreate || s.EnableCRIU != nil {
		t.Fatalf("got %+v %v", s, err)
	}
	s, err = parseCRIConfig(`{"containerd":{}}`) // containerd 2.1/2.2: no such setting
	if err != nil || s.RestoreViaCreate != nil {
		t.Fatalf("got %+v %v", s, err)
	}
	if _, err := parseCRIConfig(""); err == nil {
		t.Error("an empty config was accepted")
	}
}
