package head

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestKernelNFSExport(t *testing.T) {
	dir := t.TempDir()
	run := &fakeRunner{script: map[string][]reply{"exportfs -r": {ok("")}}}
	k := &KernelNFS{Runner: run, Clients: "10.202.0.0/24", ExportsDir: dir}
	if err := k.Export(context.Background(), "pool-always-0", "/dev/md/pool-always-0", "/srv/distonet/pool/pool-always-0"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "distonet-pool-always-0.exports"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "/srv/distonet/pool/pool-always-0 10.202.0.0/24(rw,sync,no_subtree_check,no_root_squash)\n"; got != want {
		t.Errorf("exports line %q, want %q", got, want)
	}
	if err := k.Unexport(context.Background(), "pool-always-0", "", "/srv/distonet/pool/pool-always-0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "distonet-pool-always-0.exports")); !os.IsNotExist(err) {
		t.Errorf("exports file left behind: %v", err)
	}
	if diff := cmp.Diff([]string{"exportfs -r", "exportfs -r"}, run.calls); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "*(rw)", "10.0.0.0/8 evil(rw)", "a\nb"} {
		k.Clients = bad
		if err := k.Export(context.Background(), "x", "", "/mnt/x"); err == nil || !strings.Contains(err.Error(), "clients") {
			t.Errorf("clients %q accepted: %v", bad, err)
		}
	}
}
