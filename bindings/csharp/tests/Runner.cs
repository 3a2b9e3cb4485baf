// A small test runner: every public static method marked [Test] in this program runs in
// name order; prints one line per test, then "N passed, N failed"; exits 1 on any failure.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Reflection;

namespace Tether.Tests
{
    [AttributeUsage(AttributeTargets.Method)]
    public sealed class TestAttribute : Attribute
    {
    }

    public sealed class AssertionException : Exception
    {
        public AssertionException(string message) : base(message)
        {
        }
    }

    public static class Assert
    {
        public static void True(bool condition, string what)
        {
            if (!condition)
            {
                throw new AssertionException(what);
            }
        }

        public static void Equal<T>(T expected, T actual, string what = "value")
        {
            if (!EqualityComparer<T>.Default.Equals(expected, actual))
            {
                throw new AssertionException(what + ": expected <" + expected + ">, got <" + actual + ">");
            }
        }

        public static void Contains(string needle, string haystack, string what = "text")
        {
            if (haystack == null || !haystack.Contains(needle))
            {
                throw new AssertionException(what + ": <" + haystack + "> does not contain <" + needle + ">");
            }
        }

        public static T Throws<T>(Action action, string what) where T : Exception
        {
            try
            {
                action();
            }
            catch (T e)
            {
                return e;
            }
            catch (Exception e)
            {
                throw new AssertionException(what + ": expected " + typeof(T).Name + ", got " + e.GetType().Name + ": " + e.Message);
            }
            throw new AssertionException(what + ": expected " + typeof(T).Name + ", nothing was thrown");
        }

        public static TetherException Fails(Result expected, Action action, string what)
        {
            TetherException e = Throws<TetherException>(action, what);
            Equal(expected, e.Result, what + " result");
            return e;
        }
    }

    public static class Runner
    {
        public static int Main(string[] args)
        {
            List<MethodInfo> tests = Assembly.GetExecutingAssembly().GetTypes()
                .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Static))
                .Where(m => m.GetCustomAttributes(typeof(TestAttribute), false).Length > 0)
                .Where(m => args.Length == 0 || args.Any(a => (m.DeclaringType.Name + "." + m.Name).Contains(a)))
                .OrderBy(m => m.DeclaringType.Name + "." + m.Name, StringComparer.Ordinal)
                .ToList();
            int passed = 0;
            int failed = 0;
            foreach (MethodInfo test in tests)
            {
                string name = test.DeclaringType.Name + "." + test.Name;
                Stopwatch clock = Stopwatch.StartNew();
                try
                {
                    test.Invoke(null, null);
                    passed++;
                    Console.WriteLine("ok   " + name + " (" + clock.ElapsedMilliseconds + " ms)");
                }
                catch (TargetInvocationException e)
                {
                    failed++;
                    Exception inner = e.InnerException;
                    Console.WriteLine("FAIL " + name + " (" + clock.ElapsedMilliseconds + " ms): " + inner.GetType().Name + ": " + inner.Message);
                    if (!(inner is AssertionException))
                    {
                        Console.WriteLine(inner.StackTrace);
                    }
                }
            }
            Console.WriteLine(passed + " passed, " + failed + " failed");
            return failed == 0 && passed > 0 ? 0 : 1;
        }
    }
}
