package dump

import (
	"bytes"
	"testing"
)

// FuzzConfig reads a pulled config.dump and neutralizes it as pull does:
// no panic, and what comes out reads again and is neutral.
// Seeds: testdata/fuzz/FuzzConfig (podman 4.3.1's, privileged and not).
func FuzzConfig(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ReadConfig(bytes.NewReader(data))
		if err != nil {
			return
		}
		_, _, _, _ = c.Name(), c.ID(), c.RootfsImageID(), c.Runtime()
		_, _ = c.NamedVolumeMounts(), c.NetworkNames()
		c.Neutralize()
		b, err := c.Bytes()
		if err != nil {
			t.Fatalf("Bytes after Neutralize: %v", err)
		}
		again, err := ReadConfig(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("neutralized config.dump does not read again: %v", err)
		}
		for _, k := range HostPathFields {
			if again.String(k) != "" {
				t.Fatalf("%s survived Neutralize: %q", k, again.String(k))
			}
		}
	})
}
