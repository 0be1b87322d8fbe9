package appliance

import "github.com/distonet/distonet/images/store"

// StoreCatalog is the image store as the boot path sees it.
type StoreCatalog struct{ Store store.Store }

// NewStoreCatalog opens the image store of a state directory.
func NewStoreCatalog(stateDir string) StoreCatalog {
	return StoreCatalog{Store: store.Store{Dir: ImagesDir(stateDir)}}
}

func (c StoreCatalog) Names() []string { return c.Store.Names() }

func (c StoreCatalog) Current(name string) (ImageVersion, error) {
	v, err := c.Store.Current(name)
	return versionOf(v), err
}

func (c StoreCatalog) Get(name string, version uint64) (ImageVersion, error) {
	v, err := c.Store.Get(name, version)
	return versionOf(v), err
}

func versionOf(v store.Version) ImageVersion {
	return ImageVersion{Name: v.Name, Version: v.Label(), Number: v.Version, Kernel: v.Kernel(), Initrd: v.Initrd(), Rootfs: v.Rootfs()}
}

// ImageList is what GET /api/images and `image list --json` print.
type ImageList struct {
	Name     string           `json:"name"`
	Current  uint64           `json:"current"`
	Versions []store.Manifest `json:"versions"`
}

// List lists every image with its versions.
func (c StoreCatalog) List() ([]ImageList, error) {
	out := []ImageList{}
	for _, name := range c.Store.Names() {
		cur, err := c.Store.Current(name)
		if err != nil {
			return nil, err
		}
		vs, err := c.Store.Versions(name)
		if err != nil {
			return nil, err
		}
		l := ImageList{Name: name, Current: cur.Version}
		for _, v := range vs {
			l.Versions = append(l.Versions, v.Manifest)
		}
		out = append(out, l)
	}
	return out, nil
}
