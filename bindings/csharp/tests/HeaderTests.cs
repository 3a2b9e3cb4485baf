// The P/Invoke declarations stay in step with include/tether.h: every [DllImport] in
// Tether.dll names a function of the header with the same number of parameters and types
// that marshal as the C types do; every struct mirror has the header's fields in order with
// matching types; the Result enum has exactly the header's TETHER_RESULT_* names and values.
// (The Python binding's tests/test_header.py does the same for ctypes.)
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace Tether.Tests
{
    public static class HeaderTests
    {
        private static readonly HashSet<string> Opaque = new HashSet<string>
        {
            "tether_client", "tether_tls_config", "tether_tls_config_builder", "tether_connection_string", "tether_session",
            "tether_credential_store",
        };

        /// <summary>The C struct each C# mirror stands for (a mirror missing here fails the test).</summary>
        private static readonly Dictionary<string, string> Mirrors = new Dictionary<string, string>
        {
            { "Tether.DeviceClient+OptionsNative", "tether_client_options" },
            { "Tether.DeviceClient+EventNative", "tether_event" },
            { "Tether.Defaults", "tether_defaults" },
        };

        private static readonly Assembly Binding = typeof(DeviceClient).Assembly;

        private static string HeaderText()
        {
            string path = Hub.Setting("TETHER_TEST_HEADER");
            string text = File.ReadAllText(path);
            text = Regex.Replace(text, @"/\*.*?\*/", " ", RegexOptions.Singleline);
            return Regex.Replace(text, @"//[^\n]*", " ");
        }

        /// <summary><c>const struct tether_client *client</c> -> <c>struct tether_client*</c>.</summary>
        private static string CType(string decl, bool named = true)
        {
            decl = Regex.Replace(decl, @"\bconst\b", " ");
            decl = Regex.Replace(decl, @"\s*\*\s*", " * ");
            List<string> parts = decl.Split(new[] { ' ', '\t', '\n', '\r' }, StringSplitOptions.RemoveEmptyEntries).ToList();
            if (named)
            {
                parts.RemoveAt(parts.Count - 1);
            }
            return string.Join(" ", parts).Replace(" *", "*").Replace("* ", "*");
        }

        internal static Dictionary<string, Tuple<string, List<string>>> Prototypes()
        {
            var found = new Dictionary<string, Tuple<string, List<string>>>();
            foreach (Match m in Regex.Matches(HeaderText(), @"([A-Za-z_][\w \t\*]*?)\b(tether_\w+)\s*\(([^()]*)\)\s*;"))
            {
                string ret = m.Groups[1].Value.Trim();
                if (ret.StartsWith("typedef"))
                {
                    continue;
                }
                string parameters = m.Groups[3].Value.Trim();
                List<string> args = parameters == "" || parameters == "void"
                    ? new List<string>()
                    : parameters.Split(',').Select(p => CType(p)).ToList();
                found[m.Groups[2].Value] = Tuple.Create(CType(ret, false), args);
            }
            return found;
        }

        internal static Dictionary<string, List<Tuple<string, string>>> Structs()
        {
            var found = new Dictionary<string, List<Tuple<string, string>>>();
            foreach (Match m in Regex.Matches(HeaderText(), @"typedef struct (tether_\w+) \{(.*?)\} \1;", RegexOptions.Singleline))
            {
                found[m.Groups[1].Value] = m.Groups[2].Value.Split(';')
                    .Where(f => f.Trim().Length > 0)
                    .Select(f => Tuple.Create(f.Trim().Split().Last().TrimStart('*'), CType(f)))
                    .ToList();
            }
            return found;
        }

        private static bool IsByteSized(ICustomAttributeProvider where)
        {
            return where.GetCustomAttributes(typeof(MarshalAsAttribute), false).Cast<MarshalAsAttribute>()
                .Any(a => a.Value == UnmanagedType.I1 || a.Value == UnmanagedType.U1);
        }

        private static Type Underlying(Type t)
        {
            return t.IsEnum ? Enum.GetUnderlyingType(t) : t;
        }

        /// <summary>
        /// Whether a C# type (of a parameter, return value or field) marshals as the C type.
        /// <paramref name="where"/> carries the MarshalAs attribute a C bool needs.
        /// </summary>
        internal static bool Matches(string c, Type cs, ICustomAttributeProvider where)
        {
            string b = c.TrimEnd('*');
            int stars = c.Length - b.Length;
            Type element = cs.IsByRef ? cs.GetElementType() : cs;
            if (stars == 0)
            {
                if (cs.IsByRef)
                {
                    return false;
                }
                switch (b)
                {
                    case "void": return cs == typeof(void);
                    case "bool": return cs == typeof(byte) || (cs == typeof(bool) && IsByteSized(where));
                    case "int": return cs == typeof(int);
                    case "uint8_t": return cs == typeof(byte);
                    case "uint16_t": return Underlying(cs) == typeof(ushort);
                    case "uint32_t": return Underlying(cs) == typeof(uint);
                    case "uint64_t": return cs == typeof(ulong);
                    case "size_t": return cs == typeof(UIntPtr);
                    case "enum tether_result": return cs == typeof(Result);
                    case "enum tether_event_kind": return cs == typeof(EventKind);
                    case "tether_log_callback": return typeof(Delegate).IsAssignableFrom(cs);
                }
                if (b.StartsWith("struct "))
                {
                    string name;
                    return Mirrors.TryGetValue(cs.FullName, out name) && name == b.Substring(7);
                }
                throw new AssertionException("no mapping for C type " + c);
            }
            if (cs == typeof(IntPtr))
            {
                return true; // any pointer may pass as IntPtr
            }
            if (stars == 1 && (b == "char" || b == "uint8_t"))
            {
                return cs == typeof(byte[]) || cs == typeof(string);
            }
            if (b.StartsWith("struct ") && Opaque.Contains(b.Substring(7)))
            {
                // A handle: `struct x *` is a SafeHandle; `struct x **` (an output) is `out SafeHandle`.
                bool isHandle = typeof(SafeHandle).IsAssignableFrom(element);
                return isHandle && (stars == 1 ? !cs.IsByRef : (stars == 2 && cs.IsByRef));
            }
            if (stars == 1 && cs.IsByRef)
            {
                // `T *` written or read through: `out`/`ref` of the type T mirrors.
                return Matches(b, element, where);
            }
            if (stars == 2 && b == "char")
            {
                // `const char **` outputs are `out IntPtr`; inputs (arrays of strings) `IntPtr[]`.
                return cs.IsByRef ? element == typeof(IntPtr) : cs == typeof(IntPtr[]);
            }
            return false;
        }

        private static List<MethodInfo> Imports()
        {
            return Binding.GetTypes()
                .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.DeclaredOnly))
                .Where(m => (m.Attributes & MethodAttributes.PinvokeImpl) != 0)
                .ToList();
        }

        private static string EntryPoint(MethodInfo m)
        {
            DllImportAttribute a = m.GetCustomAttributes(typeof(DllImportAttribute), false).Cast<DllImportAttribute>().FirstOrDefault();
            return a != null && !string.IsNullOrEmpty(a.EntryPoint) ? a.EntryPoint : m.Name;
        }

        [Test]
        public static void HeaderIsParsed()
        {
            var protos = Prototypes();
            Assert.True(protos.Count >= 100, "parsed " + protos.Count + " prototypes");
            var poll = protos["tether_client_poll"];
            Assert.Equal("enum tether_result", poll.Item1, "tether_client_poll returns");
            Assert.Equal("struct tether_client*|uint32_t|struct tether_event*", string.Join("|", poll.Item2), "tether_client_poll parameters");
            Assert.True(Imports().Count >= 40, "found " + Imports().Count + " [DllImport] declarations");
        }

        [Test]
        public static void EveryDllImportMatchesTheHeader()
        {
            var protos = Prototypes();
            var problems = new List<string>();
            foreach (MethodInfo m in Imports())
            {
                string name = EntryPoint(m);
                Tuple<string, List<string>> proto;
                if (!protos.TryGetValue(name, out proto))
                {
                    problems.Add(name + " (" + m.DeclaringType.FullName + ") is not in tether.h");
                    continue;
                }
                ParameterInfo[] ps = m.GetParameters();
                if (ps.Length != proto.Item2.Count)
                {
                    problems.Add(name + ": " + proto.Item2.Count + " parameters in C, " + ps.Length + " in C#");
                    continue;
                }
                if (!Matches(proto.Item1, m.ReturnType, m.ReturnParameter))
                {
                    problems.Add(name + ": returns " + proto.Item1 + " in C, " + m.ReturnType.Name + " in C#");
                }
                for (int i = 0; i < ps.Length; i++)
                {
                    if (!Matches(proto.Item2[i], ps[i].ParameterType, ps[i]))
                    {
                        problems.Add(name + " parameter " + i + " (" + ps[i].Name + "): " + proto.Item2[i] + " in C, " +
                            ps[i].ParameterType.Name + " in C#");
                    }
                }
                DllImportAttribute a = m.GetCustomAttributes(typeof(DllImportAttribute), false).Cast<DllImportAttribute>().FirstOrDefault();
                if (a != null && a.CallingConvention != CallingConvention.Cdecl)
                {
                    problems.Add(name + ": calling convention " + a.CallingConvention + ", not Cdecl");
                }
            }
            Assert.True(problems.Count == 0, string.Join("; ", problems));
        }

        [Test]
        public static void StructMirrorsMatchTheHeader()
        {
            var structs = Structs();
            var problems = new List<string>();
            var mirrors = Binding.GetTypes()
                .Where(t => t.IsValueType && !t.IsEnum && t.IsLayoutSequential && t.Namespace == "Tether")
                .ToList();
            Assert.True(mirrors.Count >= Mirrors.Count, "found " + mirrors.Count + " struct mirrors");
            foreach (Type t in mirrors)
            {
                string cName;
                if (!Mirrors.TryGetValue(t.FullName, out cName))
                {
                    problems.Add(t.FullName + " is a struct mirror this test does not know: add it to Mirrors");
                    continue;
                }
                FieldInfo[] fields = t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic)
                    .OrderBy(f => Marshal.OffsetOf(t, f.Name).ToInt64()).ToArray();
                List<Tuple<string, string>> c = structs[cName];
                string csNames = string.Join(",", fields.Select(f => f.Name.ToLowerInvariant()));
                string cNames = string.Join(",", c.Select(f => f.Item1.Replace("_", "")));
                if (csNames != cNames)
                {
                    problems.Add(cName + ": fields " + cNames + " in C, " + csNames + " in C#");
                    continue;
                }
                for (int i = 0; i < fields.Length; i++)
                {
                    if (!Matches(c[i].Item2, fields[i].FieldType, fields[i]))
                    {
                        problems.Add(cName + "." + c[i].Item1 + ": " + c[i].Item2 + " in C, " + fields[i].FieldType.Name + " in C#");
                    }
                }
            }
            Assert.True(problems.Count == 0, string.Join("; ", problems));
        }

        [Test]
        public static void ResultEnumMatchesTheHeader()
        {
            var header = new Dictionary<string, int>();
            foreach (Match m in Regex.Matches(HeaderText(), @"\bTETHER_RESULT_(\w+) = (\d+)"))
            {
                header[m.Groups[1].Value.Replace("_", "").ToLowerInvariant()] = int.Parse(m.Groups[2].Value);
            }
            Assert.True(header.Count >= 30, "parsed " + header.Count + " result codes");
            var binding = Enum.GetValues(typeof(Result)).Cast<Result>()
                .ToDictionary(r => r.ToString().ToLowerInvariant(), r => (int)r);
            var problems = new List<string>();
            foreach (var kv in header)
            {
                int value;
                if (!binding.TryGetValue(kv.Key, out value))
                {
                    problems.Add("TETHER_RESULT_" + kv.Key + " = " + kv.Value + " is missing from Result");
                }
                else if (value != kv.Value)
                {
                    problems.Add(kv.Key + ": " + kv.Value + " in C, " + value + " in C#");
                }
            }
            problems.AddRange(binding.Keys.Where(k => !header.ContainsKey(k)).Select(k => "Result." + k + " is not in tether.h"));
            Assert.True(problems.Count == 0, string.Join("; ", problems));
        }

        [Test]
        public static void EventKindValuesMatchTheHeader()
        {
            var header = Regex.Matches(HeaderText(), @"\bTETHER_EVENT_\w+ = (\d+)").Cast<Match>()
                .Select(m => int.Parse(m.Groups[1].Value)).OrderBy(v => v).ToList();
            var binding = Enum.GetValues(typeof(EventKind)).Cast<int>().OrderBy(v => v).ToList();
            Assert.True(header.Count >= 9, "parsed " + header.Count + " event kinds");
            Assert.Equal(string.Join(",", header), string.Join(",", binding), "event kind values");
        }

        [Test]
        public static void DriftIsDetected()
        {
            // The check itself must be able to fail: wrong widths, a 4-byte bool, a missing
            // `out`, a struct by value for a pointer.
            Assert.True(!Matches("uint64_t", typeof(uint), null), "uint for uint64_t");
            Assert.True(!Matches("size_t", typeof(uint), null), "uint for size_t");
            Assert.True(!Matches("bool", typeof(bool), typeof(HeaderTests).GetMethod("DriftIsDetected").ReturnParameter),
                "bool without MarshalAs(I1)");
            Assert.True(!Matches("size_t*", typeof(UIntPtr), null), "size_t * without out");
            Assert.True(Matches("size_t*", typeof(UIntPtr).MakeByRefType(), null), "out UIntPtr for size_t *");
            Type handle = typeof(DeviceClient).GetNestedType("Handle", BindingFlags.NonPublic);
            Assert.True(Matches("struct tether_client**", handle.MakeByRefType(), null), "out Handle for a handle output");
            Assert.True(!Matches("struct tether_client**", handle, null), "handle output without out");
            Assert.True(!Matches("enum tether_result", typeof(int), null), "int for the result enum");
        }
    }
}
