// Package ckpt is the checkpoint image format, shared by push and pull: the
// members of podman's checkpoint archive, the role each layer plays, the
// annotations on the manifest and its layers; Build writes such an image
// into any containers/image destination, Open verifies one entry by entry,
// ReadMetadata reads only what planning needs, and Image.WriteArchive turns
// a verified image back into podman's archive with members replaced.
package ckpt

import (
	"archive/tar"
	"fmt"
	"io"
	"strings"

	metadata "github.com/checkpoint-restore/checkpointctl/lib"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// Members of podman's export archive (checkpointctl's names where it has them).
const (
	ConfigDump     = metadata.ConfigDumpFile
	SpecDump       = metadata.SpecDumpFile
	NetworkStatus  = metadata.NetworkStatusFile
	CheckpointDir  = metadata.CheckpointDirectory
	VolumesDir     = metadata.CheckpointVolumesDirectory
	DevShmTar      = metadata.DevShmCheckpointTar
	RootfsDiffTar  = metadata.RootFsDiffTar
	DeletedFiles   = metadata.DeletedFilesFile
	StatsDump      = "stats-dump" // go-criu's stats.StatsDump
	ArtifactsDir   = "artifacts"
	ContainerLog   = "ctr.log"
	PreCheckpoint  = "pre-checkpoint"
	CheckpointDone = "checkpoint.done"
	// What CRI-O's archives add (cri-o internal/lib/checkpoint.go): the
	// bind mount sources' kinds, CRIU's dump log and the container's log.
	CRIOBindMounts = "bind.mounts"
	DumpLog        = metadata.DumpLogFile
	CRIOLogFile    = "io.kubernetes.cri-o.LogPath"
)

// Role says what a layer of a checkpoint image holds.
type Role string

// The layer roles, in the order the layers appear in the manifest.
const (
	RoleMetadata Role = "metadata"
	RoleCRIU     Role = "criu"
	RoleRootfs   Role = "rootfs"
	RoleVolume   Role = "volume"
)

// Annotation keys. Podman's own keys are the ones `podman container
// checkpoint --create-image` writes and `podman container restore IMAGE`
// reads (libpod/define/annotations.go).
const (
	PodmanPrefix        = "io.podman.annotations.checkpoint."
	AnnName             = PodmanPrefix + "name"
	AnnRawImageName     = PodmanPrefix + "rawImageName"
	AnnRootfsImageID    = PodmanPrefix + "rootfsImageID"
	AnnRootfsImageName  = PodmanPrefix + "rootfsImageName"
	AnnPodmanVersion    = PodmanPrefix + "podman.version"
	AnnCriuVersion      = PodmanPrefix + "criu.version"
	AnnRuntimeName      = PodmanPrefix + "runtime.name"
	AnnRuntimeVersion   = PodmanPrefix + "runtime.version"
	AnnConmonVersion    = PodmanPrefix + "conmon.version"
	AnnHostArch         = PodmanPrefix + "host.arch"
	AnnHostKernel       = PodmanPrefix + "host.kernel"
	AnnCgroupVersion    = PodmanPrefix + "cgroups.version"
	AnnDistributionVer  = PodmanPrefix + "distribution.version"
	AnnDistributionName = PodmanPrefix + "distribution.name"
	AnnBaseName         = "org.opencontainers.image.base.name"
	AnnBaseDigest       = "org.opencontainers.image.base.digest"
	AnnCreated          = "org.opencontainers.image.created"
	Prefix              = "io.podman-migrate."
	AnnFormat           = Prefix + "format"
	AnnToolVersion      = Prefix + "version"
	AnnSourceID         = Prefix + "source.id"
	AnnLeaveRunning     = Prefix + "source.left-running"
	AnnTCPEstablished   = Prefix + "tcp-established"
	AnnFileLocks        = Prefix + "file-locks"
	AnnTCPClose         = Prefix + "tcp-close"
	AnnLayerRole        = Prefix + "layer.role"
	AnnLayerVolume      = Prefix + "layer.volume"
	// AnnBaseIncluded is the digest reference of the copy of the base image
	// that push --include-base put into the checkpoint's repository.
	AnnBaseIncluded = Prefix + "base.included"
	// AnnBindKinds records, as JSON {destination: "dir"|"file"}, what each
	// bind mount's source was, so pull can check the target's has the
	// same kind: CRIU needs it.
	AnnBindKinds  = Prefix + "bind-kinds"
	FormatVersion = "1"
)

// CRI-O's keys (cri-o internal/annotations): CRI-O restores from an image
// only when its manifest has AnnCRIOName, and reads the container's
// original CRI annotations, as JSON, from SpecAnnCRIOAnnotations in
// spec.dump's annotations.
const (
	CRIOPrefix             = "io.kubernetes.cri-o.annotations.checkpoint."
	AnnCRIOName            = CRIOPrefix + "name"
	AnnCRIOVersion         = CRIOPrefix + "cri-o.version"
	AnnCRIOCriuVersion     = CRIOPrefix + "criu.version"
	SpecAnnCRIOAnnotations = "io.kubernetes.cri-o.Annotations"
	// Kubernetes' names of a container, in spec.dump's annotations.
	SpecAnnKubePodName       = "io.kubernetes.pod.name"
	SpecAnnKubePodNamespace  = "io.kubernetes.pod.namespace"
	SpecAnnKubeContainerName = "io.kubernetes.container.name"
)

// RoleOf returns the layer role of an archive member (a slash-separated path
// relative to the archive root, without "./"), and for volumes the volume's
// name. ok is false for members this format does not know.
func RoleOf(name string) (role Role, volume string, ok bool) {
	name = strings.TrimSuffix(name, "/")
	top, rest, _ := strings.Cut(name, "/")
	switch top {
	case ConfigDump, SpecDump, NetworkStatus, StatsDump, DeletedFiles, DevShmTar, ContainerLog, CheckpointDone,
		CRIOBindMounts, DumpLog, CRIOLogFile:
		if rest != "" {
			return "", "", false
		}
		return RoleMetadata, "", true
	case ArtifactsDir:
		return RoleMetadata, "", true
	case CheckpointDir, PreCheckpoint:
		return RoleCRIU, "", true
	case RootfsDiffTar:
		if rest != "" {
			return "", "", false
		}
		return RoleRootfs, "", true
	case VolumesDir:
		if rest == "" {
			return RoleVolume, "", true
		}
		if strings.Contains(rest, "/") || !strings.HasSuffix(rest, ".tar") || rest == ".tar" {
			return "", "", false
		}
		return RoleVolume, strings.TrimSuffix(rest, ".tar"), true
	}
	return "", "", false
}

// IsCheckpointAnnotations reports whether manifest annotations mark an image
// as a container checkpoint, ours, podman's or one made for CRI-O.
func IsCheckpointAnnotations(a map[string]string) bool {
	if a[AnnFormat] != "" || a[AnnCRIOName] != "" {
		return true
	}
	_, ok := a[AnnRuntimeName]
	return ok
}

// ErrNotCheckpoint is wrapped when an image is not a container checkpoint.
var ErrNotCheckpoint = fault.New(fault.Input, "not a checkpoint image")

// WriteMember writes one archive member under its clean name (as
// tarsafe.Checker.Check returns it) with a header built afresh from the
// fields podman's untar uses, so nothing else from the input (PAX records,
// xattrs, owner names, link names) is carried along. Directories get no
// body; for regular files body supplies size bytes.
func WriteMember(tw *tar.Writer, name string, h *tar.Header, body io.Reader, size int64) error {
	out := &tar.Header{
		Name: name, Typeflag: h.Typeflag, Mode: h.Mode, Size: size,
		Uid: h.Uid, Gid: h.Gid, ModTime: h.ModTime,
	}
	if h.Typeflag == tar.TypeDir {
		out.Name += "/"
		out.Size = 0
	}
	if err := tw.WriteHeader(out); err != nil {
		return fmt.Errorf("writing %q: %w", name, err)
	}
	if h.Typeflag == tar.TypeDir {
		return nil
	}
	if _, err := io.Copy(tw, body); err != nil {
		return fmt.Errorf("copying %q: %w", name, err)
	}
	return nil
}

// ShortID is the 12-character form podman shows of container and image
// IDs.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
