"""Who may do what: users and roles, server-side sessions, sign-in, the dependency aliases every route
takes (`Reader`, `Admin`, `DbSession`, ...), and the security headers on every answer."""
