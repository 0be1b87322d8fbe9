package dhcp

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// leaseLog is the durable side of the lease table: an append-only file of
// leaseRecords. Writers append under the table lock and wait for the commit
// that carries their record; one goroutine writes and fdatasyncs whatever has
// accumulated, so a burst of N acknowledgements costs one sync, not N (group
// commit). The file is never rewritten in place: compaction writes a fresh
// snapshot beside it and renames it over, so a kill -9 at any instant leaves
// either the old or the new file, each complete up to its last synced record.
type leaseLog struct {
	path string
	f    *os.File
	lock *os.File

	// size is the file's length up to its last durable record; dirty says a
	// failed write may have left a partial record after it. Writer goroutine only.
	size  int64
	dirty bool

	// Guarded by the lease table's mutex.
	pending []byte
	batch   *commit
	records int // records in the current file
	compact bool
}

// commit is one group of records made durable together.
type commit struct {
	done chan struct{}
	err  error
}

func newCommit() *commit { return &commit{done: make(chan struct{})} }

// openLeaseLog locks the log against a second server on the same file and
// returns its current content.
func openLeaseLog(path string) (*leaseLog, []byte, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, nil, fmt.Errorf("lease log %s: %w", path, err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("lease log lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, nil, fmt.Errorf("lease log %s is in use by another process: %w", path, err)
	}
	// A crash during compaction leaves a temporary snapshot; the log itself is intact.
	_ = os.Remove(path + ".tmp")
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		lock.Close()
		return nil, nil, fmt.Errorf("read lease log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		lock.Close()
		return nil, nil, fmt.Errorf("open lease log: %w", err)
	}
	l := &leaseLog{path: path, f: f, lock: lock, batch: newCommit()}
	if len(data) == 0 {
		if _, err := f.WriteString(leaseLogHeader); err != nil {
			l.close()
			return nil, nil, fmt.Errorf("write lease log header: %w", err)
		}
	} else if data[len(data)-1] != '\n' {
		// Terminate a torn final line so the next record starts on its own line.
		if _, err := f.WriteString("\n"); err != nil {
			l.close()
			return nil, nil, fmt.Errorf("repair lease log: %w", err)
		}
	}
	st, err := f.Stat()
	if err != nil {
		l.close()
		return nil, nil, fmt.Errorf("stat lease log: %w", err)
	}
	l.size = st.Size()
	return l, data, nil
}

// write appends buf and makes it durable. After a failure the file is cut
// back to its last durable length before anything else is appended, so a
// partial record never swallows the next one (records of a failed batch were
// never acknowledged).
func (l *leaseLog) write(buf []byte) error {
	if l.dirty {
		if err := l.f.Truncate(l.size); err != nil {
			return fmt.Errorf("repair lease log %s after a failed write: %w", l.path, err)
		}
		l.dirty = false
	}
	if _, err := l.f.Write(buf); err != nil {
		l.dirty = true
		return fmt.Errorf("append lease log %s: %w", l.path, err)
	}
	if err := unix.Fdatasync(int(l.f.Fd())); err != nil {
		l.dirty = true
		return fmt.Errorf("sync lease log %s: %w", l.path, err)
	}
	l.size += int64(len(buf))
	return nil
}

// replace atomically swaps the log for a snapshot holding snap.
func (l *leaseLog) replace(snap []byte) error {
	tmp := l.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("compact lease log: %w", err)
	}
	if _, err := f.Write(snap); err != nil {
		f.Close()
		return fmt.Errorf("compact lease log: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("compact lease log: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("compact lease log: %w", err)
	}
	if err := os.Rename(tmp, l.path); err != nil {
		return fmt.Errorf("compact lease log: rename: %w", err)
	}
	if d, err := os.Open(filepath.Dir(l.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	nf, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("compact lease log: reopen: %w", err)
	}
	l.f.Close()
	l.f = nf
	l.size, l.dirty = int64(len(snap)), false
	return nil
}

func (l *leaseLog) close() error {
	err := l.f.Close()
	l.lock.Close()
	return err
}

// LoadLeases reads a lease log as a server would replay it, without locking it
// (a running server may be appending): for tools that show leases while the
// daemon is stopped or running. Records that fail their checksum are skipped.
func LoadLeases(path string) ([]Lease, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read lease log: %w", err)
	}
	t := newLeaseTable(&Config{Logger: slog.Default()})
	t.load(data)
	return t.list(), nil
}
