package nfsroot

// Export is one version of an image's rootfs as the server sees it.
type Export struct {
	// Path is the mount path clients ask for, "/images/NAME".
	Path string
	// Root is the directory holding this version's rootfs. It must not change once published.
	Root string
	// Version identifies this version of the export; handles carry it, so a node keeps
	// reading the version it mounted after a newer one is published. Never reuse a number
	// for different content.
	Version uint64
}

// Exports is what nfsroot needs from the image registry.
type Exports interface {
	// Export returns the current version published at a mount path.
	Export(path string) (Export, bool)
	// Version returns a given version of the export at path, current or older, as long
	// as its rootfs is still on disk; handles taken before an update resolve through it.
	Version(path string, version uint64) (Export, bool)
	// List returns the current version of every export (for MOUNT EXPORT and showmount -e).
	List() []Export
}
