package tftp

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// errOutsideRoot marks a name that would leave the served directory.
var errOutsideRoot = errors.New("path outside the boot root")

// cleanName turns a requested name into a path relative to the root. Absolute names and
// any ".." element are refused outright, before the file system is asked: a name is either
// plainly inside the root or an attack. Symlinks are checked when opening (os.Root).
func cleanName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%q is absolute: %w", name, errOutsideRoot)
	}
	for _, elem := range strings.Split(name, "/") {
		if elem == ".." {
			return "", fmt.Errorf("%q climbs with '..': %w", name, errOutsideRoot)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", fmt.Errorf("%q names the root itself: %w", name, fs.ErrNotExist)
	}
	return clean, nil
}

// openRegular opens a regular file under root. os.Root refuses symlinks (and any other
// route) that lead out of the root. O_NONBLOCK keeps a FIFO placed in the tree from
// blocking the open; it is then refused as not regular.
func openRegular(root *os.Root, name string) (*os.File, int64, error) {
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return nil, 0, err
		}
		// os.Root reports escapes (symlinks out, ".." through a symlink) with an
		// unexported error: whatever else fails is treated as leaving the root.
		return nil, 0, fmt.Errorf("%w: %w", errOutsideRoot, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("stat %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s is not a regular file: %w", name, fs.ErrNotExist)
	}
	return f, fi.Size(), nil
}

// errorFor maps a resolution error to the TFTP error sent to the client.
func errorFor(err error) ErrorPacket {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ErrorPacket{Code: ErrNotFound, Message: "file not found"}
	case errors.Is(err, errOutsideRoot), errors.Is(err, fs.ErrPermission):
		return ErrorPacket{Code: ErrAccess, Message: "access violation"}
	default:
		return ErrorPacket{Code: ErrUndefined, Message: "cannot read file"}
	}
}
