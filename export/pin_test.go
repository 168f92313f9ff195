package export

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"testing"
	"time"

	"github.com/containers/image/v5/oci/layout"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/dump"
)

// TestImageDigestsPinned builds an image from a fixed archive and fixed
// provenance exactly as push does (Convert: build with the CRI-O rewrites,
// annotations and the annotations known before the checkpoint) and pins
// the digests of its manifest, config and layers: refactoring the format
// code must not change a byte of what push writes. The constants were
// taken from the code before the format views were introduced; never
// change them to make this pass.
func TestImageDigestsPinned(t *testing.T) {
	type want struct {
		manifest, config string
		layers           []string
	}
	tests := []struct {
		compression string
		noCRIO      bool
		want        want
	}{
		{"zstd", false, want{
			manifest: "sha256:6a05c43c3a06e9b73e4cef7f0b120a1f5648dc2b56efe843805f632fcdd9781c",
			config:   "sha256:bd281bd47f455086c5868fc40275727faaf3cca92e999bf284927f0f1c4b08bc",
			layers: []string{
				"sha256:7291f4d9522392fe676afa23bd49c6ee2b44d1d9831adda28d2fefa47d7cd4be",
				"sha256:511bdc769cbaf7f109fb4b26d6d1be95e79e3958bd3b1364e9cbde1c3cba876b",
				"sha256:07d4e16c91713b42367048cee5bf136d1b6041021f47af4c125a6a529df786cc",
				"sha256:cbe4170b76cbc4b3021d8a702a693c91fcceff27eb16d1cf0ea0ce56371a0ad9",
			},
		}},
		{"zstd", true, want{
			manifest: "sha256:47d7d6b2ab553bc2872891a7a90ee31e1b026ba3895dfec2539e4edc11acee0d",
			config:   "sha256:517ada54fd6d7e6833d4679d1d71e15a56f1a6197dbf11fba70d28f812d4a05a",
			layers: []string{
				"sha256:58ba7942b4feb0ee07a0fa8375597c477588e66abb08765038cacb53efe07511",
				"sha256:511bdc769cbaf7f109fb4b26d6d1be95e79e3958bd3b1364e9cbde1c3cba876b",
				"sha256:07d4e16c91713b42367048cee5bf136d1b6041021f47af4c125a6a529df786cc",
				"sha256:cbe4170b76cbc4b3021d8a702a693c91fcceff27eb16d1cf0ea0ce56371a0ad9",
			},
		}},
		{"gzip", false, want{
			manifest: "sha256:293086c2773fd9179cb30ee4d73b4d1b27a0c46ad20f3a6786f1fd366733299a",
			config:   "sha256:bd281bd47f455086c5868fc40275727faaf3cca92e999bf284927f0f1c4b08bc",
			layers: []string{
				"sha256:aa0b2b09cc25e76edb26bbc7857deaa3d6fff3f793d227628dfb6a2bac54f865",
				"sha256:5ec1025af656e11d8105694ccfa3a7f1068ed4384b95fc4193b18eb116df34cc",
				"sha256:d8803c54fcbb45144d4a4f1bf142c70d222119ba085d005b91c0bbaca9ee2816",
				"sha256:ec018d6cb7b455fabf8f4fdd21ce9f22d86c016bc397a1db5144209bee9a5887",
			},
		}},
		{"gzip", true, want{
			manifest: "sha256:d13380a8fc097e5a610b05a91e7764dd5b7b3ef64c6ed24830307af74106c2b0",
			config:   "sha256:517ada54fd6d7e6833d4679d1d71e15a56f1a6197dbf11fba70d28f812d4a05a",
			layers: []string{
				"sha256:c59559ed9f6e086f21b494fe3b49a9d797349fae46afa66e7c31f566dd0a8abc",
				"sha256:5ec1025af656e11d8105694ccfa3a7f1068ed4384b95fc4193b18eb116df34cc",
				"sha256:d8803c54fcbb45144d4a4f1bf142c70d222119ba085d005b91c0bbaca9ee2816",
				"sha256:ec018d6cb7b455fabf8f4fdd21ce9f22d86c016bc397a1db5144209bee9a5887",
			},
		}},
	}
	archive := pinArchive(t)
	for _, tt := range tests {
		name := tt.compression
		if tt.noCRIO {
			name += "-no-cri-o"
		}
		t.Run(name, func(t *testing.T) {
			got := pinBuild(t, archive, tt.compression, tt.noCRIO)
			if got.manifest != tt.want.manifest {
				t.Errorf("manifest digest %s, want %s", got.manifest, tt.want.manifest)
			}
			if got.config != tt.want.config {
				t.Errorf("config digest %s, want %s", got.config, tt.want.config)
			}
			if len(got.layers) != len(tt.want.layers) {
				t.Fatalf("%d layers, want %d", len(got.layers), len(tt.want.layers))
			}
			for i := range got.layers {
				if got.layers[i] != tt.want.layers[i] {
					t.Errorf("layer %d digest %s, want %s", i, got.layers[i], tt.want.layers[i])
				}
			}
		})
	}
}

type pinned struct {
	manifest, config string
	layers           []string
}

// pinBuild does what Convert does, with fixed inputs, into an oci: layout.
func pinBuild(t *testing.T, archive []byte, compression string, noCRIO bool) pinned {
	t.Helper()
	ctx := context.Background()
	ref, err := layout.NewReference(t.TempDir(), "pin")
	if err != nil {
		t.Fatal(err)
	}
	dest, err := ref.NewImageDestination(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctr := &podman.Container{
		ID:         "5f1c0a7e3b2d4c6e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e",
		Name:       "pinned",
		Image:      pinImageID,
		ImageName:  "quay.io/example/app:1.0",
		OCIRuntime: "crun",
	}
	info := &podman.Info{}
	info.Host.Arch = "amd64"
	info.Host.Kernel = "6.1.0-pin"
	info.Host.CgroupsVersion = "v2"
	info.Host.Distribution.Distribution = "debian"
	info.Host.Distribution.Version = "12"
	info.Host.OCIRuntime.Name = "runc"
	info.Host.OCIRuntime.Version = "crun version 1.8.1"
	// Conmon's version left empty: empty values are not written.
	info.Version.Version = "4.3.1"
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	o := PushOptions{ToolVersion: "pin", TCPEstablished: true, NoCRIOAnnotations: noCRIO, Compression: compression}
	known := map[string]string{
		ckpt.AnnCriuVersion:  "3.17.1",
		ckpt.AnnBindKinds:    `{"/etc/app.conf":"file","/srv":"dir"}`,
		ckpt.AnnBaseIncluded: "registry.example/ckpt/app@sha256:" + pinImageID,
	}
	var rewrite map[string]func([]byte) ([]byte, error)
	if !noCRIO {
		rewrite = ckpt.ToCRIO()
	}
	built, err := build(ctx, bytes.NewReader(archive), dest, ckpt.BuildOptions{
		Rewrite:     rewrite,
		Compression: compression,
		Arch:        info.Host.Arch,
		Created:     created,
		Annotate: func(cfg *dump.Config) (map[string]string, error) {
			a := annotations(cfg, ctr, info, "sha256:"+pinBaseDigest, created, o)
			for k, v := range known {
				a[k] = v
			}
			return a, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := pinned{manifest: built.Digest.String(), config: built.Manifest.Config.Digest.String()}
	for _, l := range built.Manifest.Layers {
		p.layers = append(p.layers, l.Digest.String())
	}
	return p
}

const (
	pinImageID    = "3a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9"
	pinBaseDigest = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
)

// pinArchive is a fixed podman-like export archive. spec.dump and
// config.dump are indented as podman writes them and hold what a rewrite
// could lose: unknown fields, large integers, HTML characters and
// non-ASCII text.
func pinArchive(t *testing.T) []byte {
	t.Helper()
	mt := time.Unix(1750000000, 0).UTC()
	rootfs := pinTar(t, mt, []pinEntry{
		{"etc/", tar.TypeDir, nil, ""},
		{"etc/app.conf", tar.TypeReg, []byte("listen = 8080\n"), ""},
		{"etc/link", tar.TypeSymlink, nil, "app.conf"},
	})
	volume := pinTar(t, mt, []pinEntry{
		{"./", tar.TypeDir, nil, ""},
		{"./state.db", tar.TypeReg, []byte("volume content\x00\x01\x02"), ""},
	})
	return pinTar(t, mt, []pinEntry{
		{"./", tar.TypeDir, nil, ""},
		{"artifacts/", tar.TypeDir, nil, ""},
		{"devshm-checkpoint.tar", tar.TypeReg, pinTar(t, mt, nil), ""},
		{"config.dump", tar.TypeReg, []byte(pinConfigDump), ""},
		{"spec.dump", tar.TypeReg, []byte(pinSpecDump), ""},
		{"network.status", tar.TypeReg, []byte(pinNetworkStatus), ""},
		{"stats-dump", tar.TypeReg, []byte{0, 1, 2, 3, 4}, ""},
		{"checkpoint/", tar.TypeDir, nil, ""},
		{"checkpoint/inventory.img", tar.TypeReg, []byte("inventory"), ""},
		{"checkpoint/pages-1.img", tar.TypeReg, pinPages(256 << 10), ""},
		{"rootfs-diff.tar", tar.TypeReg, rootfs, ""},
		{"deleted.files", tar.TypeReg, []byte(`["/etc/old"]`), ""},
		{"volumes/", tar.TypeDir, nil, ""},
		{"volumes/appdata.tar", tar.TypeReg, volume, ""},
	})
}

type pinEntry struct {
	name string
	typ  byte
	body []byte
	link string
}

func pinTar(t *testing.T, mt time.Time, entries []pinEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, ModTime: mt, Linkname: e.link, Format: tar.FormatPAX}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pinPages is n bytes of a SHA-256 counter stream: incompressible, and
// the same on every Go version.
func pinPages(n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	var ctr [8]byte
	for i := uint64(0); len(out) < n; i++ {
		binary.BigEndian.PutUint64(ctr[:], i)
		s := sha256.Sum256(ctr[:])
		out = append(out, s[:]...)
	}
	return out[:n]
}

const pinSpecDump = `{
  "ociVersion": "1.0.2-dev",
  "process": {
    "user": {
      "uid": 0,
      "gid": 0,
      "umask": 18
    },
    "args": [
      "/bin/app",
      "--greeting=<héllo & welcome>"
    ],
    "env": [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "container=podman"
    ],
    "cwd": "/",
    "capabilities": {
      "bounding": [
        "CAP_CHOWN",
        "CAP_KILL"
      ]
    },
    "rlimits": [
      {
        "type": "RLIMIT_NOFILE",
        "hard": 18446744073709551615,
        "soft": 1048576
      }
    ],
    "oomScoreAdj": 0
  },
  "root": {
    "path": "/var/lib/containers/storage/overlay/abc/merged"
  },
  "hostname": "pinned",
  "mounts": [
    {
      "destination": "/proc",
      "type": "proc",
      "source": "proc",
      "options": [
        "nosuid",
        "noexec",
        "nodev"
      ]
    },
    {
      "destination": "/dev/shm",
      "type": "bind",
      "source": "/var/lib/containers/storage/overlay-containers/5f1c0a7e3b2d4c6e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e/userdata/shm",
      "options": [
        "bind",
        "private",
        "nosuid",
        "noexec",
        "nodev"
      ]
    },
    {
      "destination": "/data",
      "type": "bind",
      "source": "/var/lib/containers/storage/volumes/appdata/_data",
      "options": [
        "nosuid",
        "nodev",
        "rbind"
      ]
    },
    {
      "destination": "/srv",
      "type": "bind",
      "source": "/home/user/srv",
      "options": [
        "ro",
        "rbind"
      ],
      "uidMappings": [
        {
          "containerID": 0,
          "hostID": 100000,
          "size": 65536
        }
      ]
    },
    {
      "destination": "/etc/app.conf",
      "type": "bind",
      "source": "/home/user/app.conf",
      "options": [
        "rbind"
      ]
    },
    {
      "destination": "/etc/hosts",
      "type": "bind",
      "source": "/var/lib/containers/storage/overlay-containers/5f1c0a7e3b2d4c6e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e/userdata/hosts",
      "options": [
        "bind",
        "rprivate"
      ]
    }
  ],
  "annotations": {
    "io.container.manager": "libpod",
    "io.podman.annotations.autoremove": "FALSE",
    "org.opencontainers.image.stopSignal": "15",
    "com.example.note": "a <b> & \"c\" \u2028 ünïcødé"
  },
  "linux": {
    "namespaces": [
      {
        "type": "pid"
      },
      {
        "type": "network",
        "path": "/run/netns/netns-1234"
      },
      {
        "type": "ipc"
      },
      {
        "type": "uts"
      },
      {
        "type": "mount"
      }
    ],
    "maskedPaths": [
      "/proc/kcore"
    ],
    "seccomp": {
      "defaultAction": "SCMP_ACT_ERRNO",
      "defaultErrnoRet": 38
    },
    "x-unknown": {
      "kept": [1.50, 2e3, -0.0]
    }
  }
}
`

const pinConfigDump = `{
  "spec": {
    "ociVersion": "1.0.2-dev",
    "mounts": [
      {
        "destination": "/srv",
        "type": "bind",
        "source": "/home/user/srv",
        "options": [
          "ro",
          "rbind"
        ]
      }
    ]
  },
  "id": "5f1c0a7e3b2d4c6e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e",
  "name": "pinned",
  "rootfsImageID": "3a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9",
  "rootfsImageName": "quay.io/example/app:1.0",
  "RawImageName": "quay.io/example/app:1.0",
  "ShmDir": "/var/lib/containers/storage/overlay-containers/5f1c0a7e3b2d4c6e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e/userdata/shm",
  "conmonPidFile": "/run/containers/storage/overlay-containers/5f1c/userdata/conmon.pid",
  "staticDir": "/var/lib/containers/storage/overlay-containers/5f1c/userdata",
  "logPath": "/var/lib/containers/storage/overlay-containers/5f1c/userdata/ctr.log",
  "mounts": [
    "/var/lib/containers/storage/overlay-containers/5f1c0a7e3b2d4c6e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e/userdata/shm",
    "/var/lib/containers/storage/overlay-containers/5f1c/userdata/run/secrets"
  ],
  "namedVolumes": [
    {
      "volumeName": "appdata",
      "dest": "/data",
      "options": [
        "nosuid"
      ]
    }
  ],
  "newNetworks": {
    "podman": {
      "static_ips": [
        "10.88.0.7"
      ],
      "interface_name": "eth0"
    }
  },
  "newPortMappings": [
    {
      "host_ip": "",
      "container_port": 8080,
      "host_port": 18080,
      "range": 1,
      "protocol": "tcp"
    }
  ],
  "createNetNS": true,
  "networkMode": "bridge",
  "stopTimeout": 10,
  "createdTime": "2025-06-15T12:00:00.123456789Z",
  "labels": {
    "note": "<tag> & ünïcødé"
  }
}
`

const pinNetworkStatus = `{
  "podman": {
    "interfaces": {
      "eth0": {
        "subnets": [
          {
            "ipnet": "10.88.0.7/16",
            "gateway": "10.88.0.1"
          }
        ],
        "mac_address": "ca:fe:00:00:00:07"
      }
    }
  }
}
`
