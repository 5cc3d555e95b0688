"""File and memory scanning: the scan dispatcher actor and its sans-IO cores."""
