package tarsafe

import (
	"archive/tar"
	"bytes"
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	type entry struct {
		name, link string
		typ        byte
	}
	tests := []struct {
		name    string
		policy  Policy
		entries []entry
		wantErr bool
	}{
		{"plain file and dir", Plain, []entry{{"checkpoint/", "", tar.TypeDir}, {"checkpoint/pages-1.img", "", tar.TypeReg}}, false},
		{"dot-slash names", Plain, []entry{{"./", "", tar.TypeDir}, {"./config.dump", "", tar.TypeReg}}, false},
		{"dotdot", Plain, []entry{{"../../../../tmp/x/a", "", tar.TypeReg}}, true},
		{"inner dotdot", Tree, []entry{{"a/../../b", "", tar.TypeReg}}, true},
		{"absolute", Tree, []entry{{"/etc/passwd", "", tar.TypeReg}}, true},
		{"empty name", Tree, []entry{{"", "", tar.TypeReg}}, true},
		{"backslash", Tree, []entry{{`a\..\..\b`, "", tar.TypeReg}}, true},
		{"symlink in plain", Plain, []entry{{"checkpoint", "/etc", tar.TypeSymlink}}, true},
		{"hardlink in plain", Plain, []entry{{"a", "", tar.TypeReg}, {"b", "a", tar.TypeLink}}, true},
		{"char device", Tree, []entry{{"dev/null", "", tar.TypeChar}}, true},
		{"block device", Tree, []entry{{"dev/sda", "", tar.TypeBlock}}, true},
		{"fifo in tree", Tree, []entry{{"run/fifo", "", tar.TypeFifo}}, false},
		{"fifo in plain", Plain, []entry{{"fifo", "", tar.TypeFifo}}, true},
		{"relative symlink inside", Tree, []entry{{"etc/alias", "marker", tar.TypeSymlink}}, false},
		{"relative symlink climbing out", Tree, []entry{{"etc/evil", "../../../etc/shadow", tar.TypeSymlink}}, true},
		{"absolute symlink (container-relative)", Tree, []entry{{"usr/bin/sh", "/bin/busybox", tar.TypeSymlink}}, false},
		{"write through own symlink", Tree, []entry{{"lib", "/etc", tar.TypeSymlink}, {"lib/passwd", "", tar.TypeReg}}, true},
		{"write through relative symlink", Tree, []entry{{"d", "sub", tar.TypeSymlink}, {"d/x", "", tar.TypeReg}}, true},
		{"symlink replaced by dir first", Tree, []entry{{"d", "sub", tar.TypeSymlink}, {"d", "", tar.TypeDir}, {"d/x", "", tar.TypeReg}}, false},
		{"hardlink to earlier file", Tree, []entry{{"a", "", tar.TypeReg}, {"b", "a", tar.TypeLink}}, false},
		{"hardlink to unknown file", Tree, []entry{{"b", "etc/shadow", tar.TypeLink}}, true},
		{"hardlink absolute", Tree, []entry{{"b", "/etc/shadow", tar.TypeLink}}, true},
		{"hardlink dotdot", Tree, []entry{{"b", "../x", tar.TypeLink}}, true},
		{"root as symlink", Tree, []entry{{"./", "/", tar.TypeSymlink}}, true},
		{"unknown type", Tree, []entry{{"x", "", 'Z'}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewChecker(tt.policy)
			var err error
			for _, e := range tt.entries {
				if _, err = c.Check(&tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ}); err != nil {
					break
				}
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrUnsafe) {
				t.Fatalf("error %v does not wrap ErrUnsafe", err)
			}
		})
	}
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{"./a/b/": "a/b", "a//b": "a/b", "./": ".", "a/./b": "a/b"} {
		got, err := CleanName(in)
		if err != nil || got != want {
			t.Errorf("CleanName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestVerify(t *testing.T) {
	build := func(hs ...*tar.Header) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range hs {
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if h.Size > 0 {
				_, _ = tw.Write(make([]byte, h.Size))
			}
		}
		_ = tw.Close()
		return b.Bytes()
	}
	good := build(&tar.Header{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755}, &tar.Header{Name: "a/f", Typeflag: tar.TypeReg, Size: 3, Mode: 0o644})
	c, err := Verify(bytes.NewReader(good), Tree, nil)
	if err != nil {
		t.Fatalf("good archive: %v", err)
	}
	if c.BeneathLink("a/f") {
		t.Fatal("no links, yet BeneathLink")
	}
	bad := build(&tar.Header{Name: "x", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, &tar.Header{Name: "x/y", Typeflag: tar.TypeReg, Size: 1})
	if _, err := Verify(bytes.NewReader(bad), Tree, nil); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("write through symlink: err = %v", err)
	}
	if _, err := Verify(bytes.NewReader([]byte("this is not a tar archive at all, no, not at all..........")), Tree, nil); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("garbage: err = %v", err)
	}
	links := build(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/etc"})
	c, err = Verify(bytes.NewReader(links), Tree, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.BeneathLink("l/passwd") {
		t.Fatal("BeneathLink missed l/passwd")
	}
}

func TestCheckDeletedPath(t *testing.T) {
	for p, ok := range map[string]bool{"/etc/old": true, "etc/old": true, "/": false, "": false, "/../../etc": false, "/a/../../b": false} {
		if err := CheckDeletedPath(p); (err == nil) != ok {
			t.Errorf("CheckDeletedPath(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}
