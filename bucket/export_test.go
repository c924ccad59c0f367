package bucket

// UseOpenat2 turns the kernel's openat2 on or off for the file:// backend,
// so tests also run the component-by-component walk kernels before 5.6
// get. It returns a func that restores the previous setting.
func UseOpenat2(on bool) (restore func()) {
	old := useOpenat2.Swap(on)
	return func() { useOpenat2.Store(old) }
}
