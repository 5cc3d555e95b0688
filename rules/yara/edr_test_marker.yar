/*
 * Example rule shipped with edr: it fires on any file or process memory
 * carrying the marker string below, and nothing else. scripts/demo_malware.py
 * builds a harmless executable carrying it to exercise YARA scanning and
 * active response end to end (see the README).
 */
rule EDR_Test_Marker : test demo
{
    meta:
        description = "edr demo/test marker string (harmless)"
        author = "edr"
        severity = "critical"

    strings:
        $marker = "EDR_TEST_MARKER_7f3a9c2e_DO_NOT_PANIC" ascii wide

    condition:
        $marker
}
