"""The Windows sensor: ETW through pywintrace, normalized into Sysmon-shaped events, and Event Log channels.

- :mod:`~edr.sources.etw.providers`: the providers, GUIDs and keywords enabled.
- :mod:`~edr.sources.etw.session`: one real-time session over pywintrace's ``etw``.
- :mod:`~edr.sources.etw.bridge`: the consumer thread's callback -> Trio, in batches.
- :mod:`~edr.sources.etw.record`: reading pywintrace's ``(event_id, dict)`` records.
- :mod:`~edr.sources.etw.normalize` and the ``*_events`` modules: records -> Events (sans-IO).
- :mod:`~edr.sources.etw.host`, :mod:`~edr.sources.etw.pe_info`: what is asked of Windows
  (drive letters, accounts, live processes, PE files), injectable.
- :mod:`~edr.sources.etw.settings`: the ``[etw]`` section.
- :mod:`~edr.sources.etw.actor`: the source and normalizer actors of ``actors/windows.toml``.

Event Log channels (Security, System, Application, Defender...), read live as ``edr replay``
reads them from EVTX files:

- :mod:`~edr.sources.etw.eventlog_reader`: pull subscriptions through pywin32's ``win32evtlog``.
- :mod:`~edr.sources.etw.eventlog_xml`: an event's XML -> the record replay decodes (sans-IO, hardened).
- :mod:`~edr.sources.etw.eventlog_bookmarks`: where each channel was left, kept across restarts.
- the ``[eventlog]`` section is :class:`edr.config.EventLogConfig`.
- :mod:`~edr.sources.etw.eventlog_actor`: the ``eventlog_source`` and ``eventlog_normalizer`` actors.

Nothing here imports pywintrace or pywin32 at module level: it all imports on Linux,
where the tests drive it with recorded ETW events and EVTX records.
"""
