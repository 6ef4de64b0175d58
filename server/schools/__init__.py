"""Schools: the registry (counties, schools, classrooms, teachers, rooms, pairings), the
timetable of scheduled lessons, and attendance with coverage. The relay knows nothing of it:
attendance listens to the relay through `server.relay.RoomListener`/`SubscriberListener`."""
