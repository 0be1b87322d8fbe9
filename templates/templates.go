// Package templates holds the appliance's text and HTML templates (iPXE scripts, kernel
// command lines, web pages and their static assets), embedded in the binary. An admin can
// override any of them without rebuilding by placing a file at the same relative path under
// state_dir/templates/ (e.g. state_dir/templates/web/dashboard.html). Overrides replace
// embedded files; they do not add new ones (directory listings come from the embedded set).
package templates

import (
	"embed"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Every file in every sub-directory (this Go file itself is left out).
//
//go:embed */*
var embedded embed.FS

// Embedded returns the templates built into the binary.
func Embedded() fs.FS { return embedded }

// Load returns the templates with state_dir/templates/<path> taking precedence over the
// embedded file at <path>. An empty stateDir gives the embedded set.
func Load(stateDir string) fs.FS {
	if stateDir == "" {
		return embedded
	}
	return overlay{over: os.DirFS(filepath.Join(stateDir, "templates")), base: embedded}
}

// overlay opens a regular file from over when it exists there, else from base.
type overlay struct{ over, base fs.FS }

func (o overlay) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	f, err := o.over.Open(name)
	if err == nil {
		if st, serr := f.Stat(); serr == nil && st.Mode().IsRegular() {
			return f, nil
		}
		f.Close()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err // a present but unreadable override is an error, not a silent fallback
	}
	return o.base.Open(name)
}

// ReadDir lists the embedded directory: overrides replace files, they do not add any.
func (o overlay) ReadDir(name string) ([]fs.DirEntry, error) { return fs.ReadDir(o.base, name) }
