package agent

// exitCode returns exit_group(0) in x86-64 machine code, and EM_X86_64.
func exitCode() ([]byte, uint16) {
	return []byte{
		0x31, 0xff, // xor edi, edi
		0xb8, 0xe7, 0x00, 0x00, 0x00, // mov eax, 231 (exit_group)
		0x0f, 0x05, // syscall
	}, 62
}
