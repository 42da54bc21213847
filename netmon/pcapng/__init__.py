"""Capture files: pcapng written for Wireshark (writer), pcap and pcapng read for -r (reader).

Plain Python over bytes and files; it imports only netmon.errors and the version.
"""
