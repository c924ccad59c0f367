package benchutil

import (
	"encoding/json"
	"os"
	"testing"
)

// TestMergeResult: keys merged into a section leave the section's other
// keys, written by another bench program, and the other sections alone.
func TestMergeResult(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.Mkdir("bench", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := SaveResult("push", map[string]any{"rows": 3}); err != nil {
		t.Fatal(err)
	}
	if err := MergeResult("scale", map[string]any{"dashboard_s": []float64{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	if err := MergeResult("scale", map[string]any{"push_mib_s": []float64{4, 5, 6}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(ResultsFile)
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]map[string]any
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	if len(all["scale"]) != 2 || all["scale"]["dashboard_s"] == nil || all["scale"]["push_mib_s"] == nil || all["push"]["rows"] != 3.0 {
		t.Fatalf("after two merges: %s", b)
	}
	if err := os.WriteFile(ResultsFile, []byte("{broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := MergeResult("scale", map[string]any{"x": 1}); err == nil {
		t.Fatal("merged into an unreadable results file, losing what it held")
	}
}
