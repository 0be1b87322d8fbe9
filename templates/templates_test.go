package templates

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOverridesEmbeddedFiles(t *testing.T) {
	embeddedLayout, err := fs.ReadFile(Embedded(), "web/layout.html")
	if err != nil {
		t.Fatalf("embedded web/layout.html: %v", err)
	}
	dir := t.TempDir()
	over := filepath.Join(dir, "templates", "web")
	if err := os.MkdirAll(over, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(over, "layout.html"), []byte("site layout"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(over, "extra.html"), []byte("not listed"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A directory where a file is expected is not an override.
	if err := os.MkdirAll(filepath.Join(over, "login.html"), 0o755); err != nil {
		t.Fatal(err)
	}
	tfs := Load(dir)
	tests := []struct {
		path, want string
	}{
		{"web/layout.html", "site layout"},
		{"web/dashboard.html", ""}, // not overridden: the embedded one
		{"web/login.html", ""},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			got, err := fs.ReadFile(tfs, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want == "" {
				b, _ := fs.ReadFile(Embedded(), tc.path)
				want = string(b)
			}
			if string(got) != want {
				t.Errorf("read %q, want %q", got, want)
			}
		})
	}
	// Globs list the embedded set: an override replaces, it does not add.
	names, err := fs.Glob(tfs, "web/*.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n == "web/extra.html" {
			t.Error("an override file that has no embedded counterpart was listed")
		}
	}
	if len(names) == 0 {
		t.Error("no embedded web templates listed")
	}
	if _, err := tfs.Open("../etc/passwd"); err == nil {
		t.Error("a path outside the tree opened")
	}
	if got, _ := fs.ReadFile(Load(""), "web/layout.html"); string(got) != string(embeddedLayout) {
		t.Error("Load(\"\") does not give the embedded set")
	}
}
