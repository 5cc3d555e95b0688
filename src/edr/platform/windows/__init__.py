"""Windows: Win32 process facts, TerminateProcess, ACLs (pywin32), msvcrt locks."""
