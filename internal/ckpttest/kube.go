package ckpttest

import (
	"encoding/json"
	"testing"

	"sigs.k8s.io/yaml"
)

// ImageVolume is core/v1's ImageVolumeSource (Kubernetes 1.31).
type ImageVolume struct {
	Reference  string `json:"reference"`
	PullPolicy string `json:"pullPolicy"`
}

// SplitImageVolumes takes the image volumes' sources out of a Pod
// manifest, since the core/v1 types this module builds against
// (k8s.io/api v0.26) predate them. It returns the rest, to decode strictly
// into those types, and the sources by volume name; a source with any
// field but reference and pullPolicy fails the test.
func SplitImageVolumes(t testing.TB, manifest []byte) ([]byte, map[string]ImageVolume) {
	t.Helper()
	j, err := yaml.YAMLToJSON(manifest)
	if err != nil {
		t.Fatalf("manifest is not YAML: %v", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(j, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]ImageVolume{}
	spec, _ := doc["spec"].(map[string]any)
	vols, _ := spec["volumes"].([]any)
	for _, v := range vols {
		vm, _ := v.(map[string]any)
		src, ok := vm["image"]
		if !ok {
			continue
		}
		b, _ := json.Marshal(src)
		var iv ImageVolume
		if err := yaml.UnmarshalStrict(b, &iv); err != nil {
			t.Fatalf("volume %v: image: %v", vm["name"], err)
		}
		name, _ := vm["name"].(string)
		out[name] = iv
		delete(vm, "image")
	}
	rest, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return rest, out
}
