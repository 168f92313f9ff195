package mountmap

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	for _, bad := range [][]string{{"relative=/x"}, {"/x"}, {"/a=/b", "/a/=/c"}} {
		if _, err := Parse(bad); !errors.Is(err, ErrBadMap) {
			t.Errorf("--mount-map %v: err %v, want ErrBadMap", bad, err)
		}
	}
}

func TestApply(t *testing.T) {
	ms, err := Parse([]string{"/srvx=/nowhere", "/srv=/data/srv", "/srv/a/b=/deep"})
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, tt := range []struct {
		in, want string
		ok       bool
	}{
		{"/srv", "/data/srv", true},
		{"/srv/a/x", "/data/srv/a/x", true},
		{"/srv/a/b/c", "/deep/c", true}, // the longest SRC wins
		{"/srvy", "/srvy", false},       // whole components only
		{"/etc/app.conf", "/etc/app.conf", false},
	} {
		if got, ok := ms.Apply(tt.in, used); got != tt.want || ok != tt.ok {
			t.Errorf("Apply(%s) = %s, %t; want %s, %t", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	if used["/srvx"] || !used["/srv"] || !used["/srv/a/b"] {
		t.Errorf("used %v", used)
	}
	root, _ := Parse([]string{"/=/mnt"})
	if got, _ := root.Apply("/etc/x", used); got != "/mnt/etc/x" {
		t.Errorf("/ maps /etc/x to %s", got)
	}
}
