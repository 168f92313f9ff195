package podman

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// joinedRefusal is podman's answer (4.3.1 to 5.x) when asked to export the
// checkpoint of a container that joins another's namespaces. It comes
// after CRIU dumped the container; with keep, podman leaves the dump,
// config.dump and spec.dump in the container's directory.
const joinedRefusal = "cannot export checkpoints of containers with dependencies"

// keptMembers are the files of the container's directory podman's export
// takes (libpod's exportCheckpoint), in its order; the root-filesystem
// diff and the deleted files follow.
var keptMembers = []string{"artifacts", "devshm-checkpoint.tar", "config.dump", "spec.dump", "network.status", "stats-dump", "ctr.log", "checkpoint"}

// Kinds of podman's changes (containers/storage archive.ChangeType).
const (
	changeModify = 0
	changeAdd    = 1
	changeDelete = 2
)

// keptArchive assembles the archive podman would have exported: the files
// it kept, read in the service's mount namespace, and the container's
// root-filesystem changes, read through the API as podman diff and
// podman cp see them.
func (c *Client) keptArchive(ctx context.Context, nameOrID string, o CheckpointOptions) (io.ReadCloser, error) {
	op := fmt.Sprintf("assembling the checkpoint archive of container %q", nameOrID)
	fail := func(err error) (io.ReadCloser, error) { return nil, &Error{Op: op, Err: err} }
	ctr, dir, err := c.containerDir(ctx, nameOrID)
	var answer *Error
	if errors.As(err, &answer) {
		return nil, err // podman's own
	}
	if err != nil {
		return fail(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "checkpoint", "inventory.img")); err != nil {
		return fail(fmt.Errorf("podman kept no checkpoint: %w", err))
	}
	var diff *os.File
	var deleted []string
	if !o.IgnoreRootfs {
		if diff, deleted, err = c.rootfsDiff(ctx, ctr.ID, o.TmpDir); err != nil {
			return fail(err)
		}
	}
	pr, pw := io.Pipe()
	go func() {
		err := writeKept(tar.NewWriter(pw), dir, diff, deleted)
		if diff != nil {
			diff.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}

// containerDir returns the container and its directory in podman's
// storage, as this machine sees it in the service's mount namespace. An
// *Error is podman's answer to the inspection.
func (c *Client) containerDir(ctx context.Context, nameOrID string) (*Container, string, error) {
	root, err := c.ServiceRoot()
	if err != nil {
		return nil, "", err
	}
	ctr, err := c.InspectContainer(ctx, nameOrID)
	if err != nil {
		return nil, "", err
	}
	if ctr.StaticDir == "" {
		return nil, "", errors.New("podman does not say where the container's directory is")
	}
	return ctr, filepath.Join(root, ctr.StaticDir), nil
}

// writeKept writes the archive: the kept files, rootfs-diff.tar and
// deleted.files, as podman names them.
func writeKept(tw *tar.Writer, dir string, diff *os.File, deleted []string) error {
	for _, m := range keptMembers {
		err := filepath.WalkDir(filepath.Join(dir, m), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			return addFile(tw, p, rel, d)
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if diff != nil {
		st, err := diff.Stat()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: "rootfs-diff.tar", Mode: 0o600, Size: st.Size(), Typeflag: tar.TypeReg, ModTime: st.ModTime()}); err != nil {
			return err
		}
		if _, err := io.Copy(tw, diff); err != nil {
			return err
		}
	}
	if len(deleted) > 0 {
		b, err := json.Marshal(deleted)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: "deleted.files", Mode: 0o600, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	return tw.Close()
}

// addFile adds a directory or regular file; podman's sockets and pipes
// there are not part of a checkpoint.
func addFile(tw *tar.Writer, p, name string, d fs.DirEntry) error {
	if !d.IsDir() && !d.Type().IsRegular() {
		return nil
	}
	fi, err := d.Info()
	if err != nil {
		return err
	}
	hdr, err := tar.FileInfoHeader(fi, "")
	if err != nil {
		return err
	}
	hdr.Name = name
	if d.IsDir() {
		hdr.Name += "/"
		return tw.WriteHeader(hdr)
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = io.CopyN(tw, f, hdr.Size)
	return err
}

// change is one entry of podman diff.
type change struct {
	Path string `json:"Path"`
	Kind int    `json:"Kind"`
}

// rootfsDiff writes, to a temporary file in tmp, the tar of what the
// container added or changed (directories only when added, with all they
// hold, as podman's own export does), and lists what it deleted.
func (c *Client) rootfsDiff(ctx context.Context, id, tmp string) (*os.File, []string, error) {
	var changes []change
	if err := c.doJSON(ctx, fmt.Sprintf("listing the changes of container %q", id), http.MethodGet, "/containers/%s/changes", nil, &changes, id); err != nil {
		return nil, nil, err
	}
	f, err := os.CreateTemp(tmp, "podman-migrate-rootfs-diff-")
	if err != nil {
		return nil, nil, err
	}
	os.Remove(f.Name()) // it lives while open
	tw := tar.NewWriter(f)
	var deleted, taken []string
	for _, ch := range changes {
		p := path.Clean("/" + ch.Path)
		if ch.Kind == changeDelete {
			deleted = append(deleted, p)
			continue
		}
		if p == "/" || under(p, taken) {
			continue
		}
		added, err := c.copyOut(ctx, tw, id, p, ch.Kind == changeAdd)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("copying %s out of the container: %w", p, err)
		}
		if added {
			taken = append(taken, p)
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return nil, nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, deleted, nil
}

// under says whether p is one of dirs or below one.
func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// copyOut adds path p of the container, as podman cp reads it, to tw under
// its path in the root filesystem. A changed (not added) directory is
// left out: only its changed entries belong to the diff. It says whether
// it added p.
func (c *Client) copyOut(ctx context.Context, tw *tar.Writer, id, p string, added bool) (bool, error) {
	q := url.Values{"path": {p}}
	resp, err := c.do(ctx, fmt.Sprintf("copying %s out of container %q", p, id), http.MethodGet, "/containers/%s/archive", nil, q, nil, id)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	tr := tar.NewReader(resp.Body)
	parent := strings.TrimPrefix(path.Dir(p), "/")
	for first := true; ; first = false {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return !first, nil
		}
		if err != nil {
			return false, err
		}
		if first && hdr.Typeflag == tar.TypeDir && !added {
			return false, nil
		}
		name := path.Clean(hdr.Name)
		if name == ".." || strings.HasPrefix(name, "../") || path.IsAbs(name) {
			return false, fmt.Errorf("podman's archive holds %q", hdr.Name)
		}
		hdr.Name = path.Join(parent, name)
		if hdr.Typeflag == tar.TypeDir {
			hdr.Name += "/"
		}
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = path.Join(parent, path.Clean(hdr.Linkname))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return false, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return false, err
		}
	}
}

// DumpErrors returns the error lines of the container's last CRIU dump
// log (dump.log in its directory, read in the service's mount namespace):
// podman's own answer says only that runc failed. Nil when it cannot be
// read.
func (c *Client) DumpErrors(ctx context.Context, nameOrID string) []string {
	_, dir, err := c.containerDir(ctx, nameOrID)
	if err != nil {
		return nil
	}
	f, err := os.Open(filepath.Join(dir, "dump.log"))
	if err != nil {
		return nil
	}
	defer f.Close()
	return criuErrors(io.LimitReader(f, 64<<20))
}

// criuErrors picks CRIU's "Error (file:line): message" lines, messages
// only, the last few.
func criuErrors(r io.Reader) []string {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "Error (")
		if i < 0 {
			continue
		}
		msg := line[i:]
		if j := strings.Index(msg, "): "); j >= 0 {
			msg = msg[j+3:]
		}
		if strings.Contains(msg, "Can't setup RLIMIT_NOFILE") {
			continue // logged as an error, but CRIU goes on (no CAP_SYS_RESOURCE)
		}
		out = append(out, strings.TrimSpace(msg))
	}
	if len(out) > 6 {
		out = out[len(out)-6:]
	}
	return out
}
