package broker

// WithDefaults returns c with every zero field set to its documented
// default: the one place the hub's defaults are written, read by New and by
// whoever reports the effective configuration.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}
