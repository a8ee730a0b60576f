package main

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// entry is one thing in the image's file system.
type entry struct {
	path   string // absolute, clean
	kind   byte   // tar.TypeReg, tar.TypeSymlink, tar.TypeDir
	src    string // file: where the content comes from
	target string // symlink: what it points to
	mode   int64
}

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// imageCmd writes a one-layer image as a docker-archive tar (what `docker
// save` writes and `ctr images import` reads): layer.tar, the image config
// whose rootfs.diff_ids holds the layer's sha256, and manifest.json naming
// both with the image's tags. The same inputs give the same bytes (sorted
// entries, fixed times and owners), so the image ID only changes with the
// content.
//
// The file system comes from spec files, one entry a line:
//
//	file SRC DST     copy SRC (symlinks followed) to DST with SRC's mode
//	link TARGET DST  symlink DST -> TARGET
//	dir DST          an empty directory (mode 0755; /tmp gets 1777)
//
// Parent directories are added as needed.
func imageCmd(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	out := fs.String("out", "", "docker-archive tar to write (required)")
	var tags, specs, envs listFlag
	fs.Var(&tags, "tag", "NAME:TAG the image is imported as (repeatable, at least one)")
	fs.Var(&specs, "spec", "spec file (repeatable)")
	fs.Var(&envs, "env", "KEY=VALUE in the image's environment (repeatable)")
	entrypoint := fs.String("entrypoint", "", "JSON array: the image's entrypoint")
	cmd := fs.String("cmd", "", "JSON array: the image's default arguments")
	user := fs.String("user", "", "user the image runs as")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || len(tags) == 0 {
		return errors.New("image: --out and --tag are required")
	}
	for _, v := range []string{*entrypoint, *cmd} {
		if v != "" && jsonList(v) == nil {
			return fmt.Errorf("image: %q is not a JSON array of strings", v)
		}
	}
	entries := map[string]*entry{}
	for _, s := range specs {
		if err := readSpec(s, entries); err != nil {
			return err
		}
	}
	addParents(entries)

	layer, err := os.CreateTemp(filepath.Dir(*out), ".layer-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(layer.Name())
	defer layer.Close()
	h := sha256.New()
	if err := writeLayer(io.MultiWriter(layer, h), entries); err != nil {
		return err
	}
	diffID := hex.EncodeToString(h.Sum(nil))

	cfg := map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"Env":        append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, envs...),
			"Entrypoint": jsonList(*entrypoint),
			"Cmd":        jsonList(*cmd),
			"User":       *user,
			"WorkingDir": "/",
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + diffID}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	cfgSum := sha256.Sum256(cfgJSON)
	cfgName := hex.EncodeToString(cfgSum[:]) + ".json"
	layerName := diffID + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{
		"Config": cfgName, "RepoTags": []string(tags), "Layers": []string{layerName},
	}})
	if err != nil {
		return err
	}

	tmp, err := os.CreateTemp(filepath.Dir(*out), ".image-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	tw := tar.NewWriter(tmp)
	if err := tarBytes(tw, cfgName, cfgJSON); err != nil {
		return err
	}
	st, err := layer.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: diffID + "/", Mode: 0o755, ModTime: epoch}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: layerName, Mode: 0o644, Size: st.Size(), ModTime: epoch}); err != nil {
		return err
	}
	if _, err := layer.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(tw, layer); err != nil {
		return err
	}
	if err := tarBytes(tw, "manifest.json", manifest); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), *out)
}

// epoch is every file's modification time: images do not change with the
// time they were built.
var epoch = time.Unix(0, 0)

func jsonList(s string) []string {
	if s == "" {
		return nil
	}
	var l []string
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil
	}
	return l
}

func readSpec(name string, entries map[string]*entry) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		bad := fmt.Errorf("%s:%d: want \"file SRC DST\", \"link TARGET DST\" or \"dir DST\"", name, n)
		var e *entry
		switch {
		case fields[0] == "file" && len(fields) == 3:
			st, err := os.Stat(fields[1])
			if err != nil {
				return fmt.Errorf("%s:%d: %w", name, n, err)
			}
			if !st.Mode().IsRegular() {
				return fmt.Errorf("%s:%d: %s is not a regular file", name, n, fields[1])
			}
			e = &entry{kind: tar.TypeReg, src: fields[1], path: fields[2], mode: int64(st.Mode().Perm())}
		case fields[0] == "link" && len(fields) == 3:
			e = &entry{kind: tar.TypeSymlink, target: fields[1], path: fields[2], mode: 0o777}
		case fields[0] == "dir" && len(fields) == 2:
			e = &entry{kind: tar.TypeDir, path: fields[1], mode: 0o755}
		default:
			return bad
		}
		e.path = path.Clean("/" + e.path)
		if e.path == "/tmp" {
			e.mode = 0o1777
		}
		if e.path == "/" {
			return bad
		}
		// A later line for the same path wins, so specs can override.
		entries[e.path] = e
	}
	return sc.Err()
}

func addParents(entries map[string]*entry) {
	for p := range entries {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = &entry{kind: tar.TypeDir, path: d, mode: 0o755}
			}
		}
	}
}

func writeLayer(w io.Writer, entries map[string]*entry) error {
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	tw := tar.NewWriter(w)
	for _, p := range paths {
		e := entries[p]
		hdr := &tar.Header{Typeflag: e.kind, Name: strings.TrimPrefix(p, "/"), Mode: e.mode, ModTime: epoch, Format: tar.FormatPAX}
		switch e.kind {
		case tar.TypeDir:
			hdr.Name += "/"
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		case tar.TypeSymlink:
			hdr.Linkname = e.target
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := copyFile(tw, hdr, e.src); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

func copyFile(tw *tar.Writer, hdr *tar.Header, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	hdr.Size = st.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(tw, f)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if n != st.Size() {
		return fmt.Errorf("copy %s: size changed (%s bytes written)", src, strconv.FormatInt(n, 10))
	}
	return nil
}

func tarBytes(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}
