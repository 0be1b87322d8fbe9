package poolvm

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestModuleOrder(t *testing.T) {
	dir := t.TempDir()
	dep := `kernel/drivers/md/md-mod.ko:
kernel/drivers/md/raid456.ko: kernel/crypto/async_tx/async_pq.ko kernel/crypto/async_tx/async_tx.ko kernel/drivers/md/md-mod.ko kernel/lib/raid6/raid6_pq.ko
kernel/crypto/async_tx/async_pq.ko: kernel/crypto/async_tx/async_tx.ko kernel/lib/raid6/raid6_pq.ko
kernel/crypto/async_tx/async_tx.ko:
kernel/lib/raid6/raid6_pq.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/block/aoe/aoe.ko:
`
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := moduleOrder(dir, []string{"crc32c_generic", "raid456", "aoe", "md_mod"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/crypto/crc32c_generic.ko",
		"kernel/lib/raid6/raid6_pq.ko", "kernel/drivers/md/md-mod.ko", "kernel/crypto/async_tx/async_tx.ko",
		"kernel/crypto/async_tx/async_pq.ko", "kernel/drivers/md/raid456.ko",
		"kernel/drivers/block/aoe/aoe.ko",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// Every module comes after all of its dependencies.
	pos := map[string]int{}
	for i, p := range got {
		pos[p] = i
	}
	if pos["kernel/crypto/async_tx/async_tx.ko"] > pos["kernel/crypto/async_tx/async_pq.ko"] {
		t.Error("async_pq before its dependency async_tx")
	}
	if _, err := moduleOrder(dir, []string{"nonexistent"}); err == nil {
		t.Error("unknown module accepted")
	}
}
