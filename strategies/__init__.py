"""Example strategy plugins shipped with bridge."""
