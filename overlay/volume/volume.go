// Package volume manages the per-node overlay volumes: sparse files under the state
// directory, formatted ext4 by the appliance when they are created so a node never
// formats over the wire. The iSCSI target (overlay/iscsit) serves them; this package only
// creates, grows, empties and deletes them, and must not be used on a volume while its
// target is being served (remove the target first).
//
// Server requirement: e2fsprogs (mkfs.ext4, e2fsck, resize2fs).
package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Tools, by full path: a static busybox on PATH may shadow them with ext2-only applets.
var (
	MkfsExt4  = "/usr/sbin/mkfs.ext4"
	E2fsck    = "/usr/sbin/e2fsck"
	Resize2fs = "/usr/sbin/resize2fs"
)

// DefaultSize is the size of a node volume when the configuration names none.
const DefaultSize int64 = 8 << 30

// MinSize is the smallest volume we make: ext4 with a journal needs a few MiB.
const MinSize int64 = 16 << 20

// toolTimeout bounds one mkfs/fsck/resize run.
const toolTimeout = 5 * time.Minute

// ErrExists is returned by Create when the volume is already there.
var ErrExists = errors.New("volume already exists")

func checkSize(size int64) error {
	if size < MinSize {
		return fmt.Errorf("volume size %d: below the minimum %d", size, MinSize)
	}
	if size%4096 != 0 {
		return fmt.Errorf("volume size %d: not a multiple of 4096", size)
	}
	return nil
}

// Create makes a sparse file of size bytes at path holding an empty ext4 file system. It
// is atomic: the file appears complete or not at all.
func Create(path string, size int64) error {
	if err := checkSize(size); err != nil {
		return err
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("create %s: %w", path, ErrExists)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	tmp, err := format(path, size)
	if err != nil {
		return err
	}
	// Link fails if another Create won the race; rename would silently replace it.
	if err := os.Link(tmp, path); err != nil {
		os.Remove(tmp)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create %s: %w", path, ErrExists)
		}
		return fmt.Errorf("create %s: %w", path, err)
	}
	os.Remove(tmp)
	return syncDir(filepath.Dir(path))
}

// format writes a new formatted sparse file next to path and returns its name.
func format(path string, size int64) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new-*")
	if err != nil {
		return "", fmt.Errorf("volume %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("volume %s: %w", path, err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if err := f.Truncate(size); err != nil {
		return fail(err)
	}
	// lazy_itable_init/lazy_journal_init keep the file sparse; nodiscard because there is
	// nothing to discard in a new sparse file.
	if err := run(MkfsExt4, "-F", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", "-L", "distonet-upper", tmp); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("volume %s: %w", path, err)
	}
	return tmp, nil
}

// Resize grows a volume and its file system to size bytes. Shrinking is refused: it would
// need the file system to be shrunk first and can lose data.
func Resize(path string, size int64) error {
	if err := checkSize(size); err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("resize %s: %w", path, err)
	}
	if size < st.Size() {
		return fmt.Errorf("resize %s: shrinking from %d to %d is not supported", path, st.Size(), size)
	}
	if size == st.Size() {
		return nil
	}
	// resize2fs insists on a freshly checked file system; -p repairs only what is safe.
	if err := runFsck(path); err != nil {
		return fmt.Errorf("resize %s: %w", path, err)
	}
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("resize %s: %w", path, err)
	}
	if err := run(Resize2fs, path); err != nil {
		return fmt.Errorf("resize %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("resize %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("resize %s: %w", path, err)
	}
	return nil
}

// Reset empties a volume: it is replaced, atomically, by a fresh file system of the same
// size. Everything the node wrote is gone.
func Reset(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("reset %s: %w", path, err)
	}
	tmp, err := format(path, st.Size())
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("reset %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// Remove deletes a volume. Removing a volume that does not exist is not an error.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// Size returns a volume's size in bytes.
func Size(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("volume %s: %w", path, err)
	}
	return st.Size(), nil
}

func runFsck(path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, E2fsck, "-f", "-p", path).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() <= 1 { // 1: errors corrected
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w: %s", E2fsck, err, out)
	}
	return nil
}

func run(tool string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, tool, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", tool, err, out)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
