package ws

// WithDefaults returns c with every zero field set to its documented
// default: the one place the ws defaults are written, read by New and by
// whoever reports the effective configuration (gateway, README checks).
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}
